//! `veriflash import-qdl`: a Qualcomm vendor bundle (`rawprogram*.xml`, optional `patch*.xml`,
//! the image files beside them, and the Firehose programmer) becomes the package description
//! `veriflash pack` reads (`manifest_toml.rs`), so an existing bundle can be signed and then
//! flashed with every byte verified.
//!
//! The programmer is the description's *first* image, for the partition `programmer` (the
//! MDM9x07 plugin serves it over Sahara and never writes it); the bundle's images follow in
//! the order the bundle programs them. Image paths are written relative to the description.
//! What the bundle holds that a package cannot carry is refused before anything is written
//! (see `veriflash_mdm9x07::rawprogram::plan_import`); what veriflash deliberately leaves out
//! (the partition table, device-unique partitions, entries without a file) is printed.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use veriflash_core::{Error, ErrorKind};
use veriflash_mdm9x07::geometry::GEOMETRY_PARTITION;
use veriflash_mdm9x07::mibib::Table;
use veriflash_mdm9x07::rawprogram::{self, ImportOptions, ImportPlan, TableMismatch};

use crate::output::{Failure, human_size};

/// The longest partition-table image read to check labels against (a MIBIB is a few blocks).
const MAX_TABLE_FILE: u64 = 4 << 20;

/// What `import-qdl` is given.
#[derive(Debug)]
pub(crate) struct ImportArgs<'a> {
    pub(crate) rawprogram: &'a Path,
    pub(crate) patches: &'a [PathBuf],
    pub(crate) programmer: &'a Path,
    pub(crate) product: &'a str,
    pub(crate) chipset: &'a str,
    pub(crate) hardware_revisions: &'a [String],
    pub(crate) version: &'a str,
    pub(crate) security_version: u64,
    pub(crate) out: &'a Path,
    pub(crate) with_partition_table: bool,
    pub(crate) device_mibib: Option<&'a Path>,
}

#[derive(Serialize)]
struct Description<'a> {
    product: &'a str,
    chipset: &'a str,
    version: &'a str,
    security_version: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    hardware_revisions: &'a [String],
    image: Vec<ImageEntry>,
}

#[derive(Serialize)]
struct ImageEntry {
    name: String,
    partition: String,
    file: String,
}

fn io_error(path: &Path, e: &std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{}: {e}", path.display()))
}

/// A bundle's refusal: the file and what the importer said.
fn bundle_error(path: &Path, e: &veriflash_mdm9x07::Error) -> Error {
    Error::new(ErrorKind::InvalidInput, format!("{}: {e}", path.display()))
}

/// Reads an XML file of the bundle, refusing one above the parser's limit before reading it.
fn read_xml(path: &Path) -> Result<Vec<u8>, Error> {
    let len = std::fs::metadata(path)
        .map_err(|e| io_error(path, &e))?
        .len();
    if len > rawprogram::MAX_XML_LEN as u64 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: {len} bytes, more than the {} an XML file of a bundle may have",
                path.display(),
                rawprogram::MAX_XML_LEN
            ),
        ));
    }
    std::fs::read(path).map_err(|e| io_error(path, &e))
}

/// The size of a regular file, or why it cannot be used.
fn file_size(path: &Path) -> Result<u64, Error> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, &e))?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(meta.len())
}

/// `target` relative to the directory `base` (both absolute and canonical), with `/`.
fn relative(base: &Path, target: &Path) -> Option<String> {
    let base: Vec<Component<'_>> = base.components().collect();
    let target: Vec<Component<'_>> = target.components().collect();
    let common = base.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_owned(); base.len().saturating_sub(common)];
    for c in target.get(common..)? {
        parts.push(c.as_os_str().to_str()?.to_owned());
    }
    Some(parts.join("/"))
}

fn canonical(path: &Path) -> Result<PathBuf, Error> {
    std::fs::canonicalize(path).map_err(|e| io_error(path, &e))
}

/// The first bytes of a bundle file, up to what a MIBIB image can be; `None` for a file that
/// cannot be read or is larger (an SBL, a system image: not a table).
fn table_head(path: &Path) -> Option<Vec<u8>> {
    match file_size(path) {
        Ok(len) if len <= MAX_TABLE_FILE => std::fs::read(path).ok(),
        _ => None,
    }
}

/// The partition table in a MIBIB file the user gave (`--device-mibib`).
fn device_table(path: &Path, sector_size: usize) -> Result<Table, Error> {
    let len = file_size(path)?;
    if len > MAX_TABLE_FILE {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: {len} bytes, more than the {MAX_TABLE_FILE} a MIBIB copy may have",
                path.display()
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| io_error(path, &e))?;
    rawprogram::find_table(&bytes, sector_size).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: no MIBIB partition table at its start or after its first {sector_size}-byte page",
                path.display()
            ),
        )
    })
}

/// Checks the images against the bundle's own partition table, when it has one.
fn check_table(
    plan: &ImportPlan,
    bundle_table: Option<&(String, Table)>,
    bundle: &Path,
    sizes: &[(String, u64)],
) -> Result<(), Error> {
    let Some((file, table)) = bundle_table else {
        if plan.partition_table_file.is_some() {
            println!(
                "note: the bundle's partition-table image holds no table this tool reads; labels are checked against the device's MIBIB when flashing"
            );
        }
        return Ok(());
    };
    let path = bundle.join(file);
    match plan.table_mismatch(table, sizes) {
        None => {
            println!(
                "checked every label and size against the partition table in {}",
                path.display()
            );
            Ok(())
        }
        Some(m @ TableMismatch::UnknownPartition { .. }) => Err(Error::new(
            ErrorKind::UnknownPartition,
            format!("{}: {m}", path.display()),
        )),
        Some(m) => Err(Error::new(
            ErrorKind::ImageTooLarge,
            format!("{}: {m}", path.display()),
        )),
    }
}

/// `veriflash import-qdl`.
pub(crate) fn run(args: &ImportArgs<'_>) -> Result<(), Failure> {
    let xml = read_xml(args.rawprogram)?;
    let raw = rawprogram::parse_rawprogram(&xml).map_err(|e| bundle_error(args.rawprogram, &e))?;
    let mut patches = Vec::new();
    for path in args.patches {
        let bytes = read_xml(path)?;
        patches.extend(rawprogram::parse_patch(&bytes).map_err(|e| bundle_error(path, &e))?);
    }
    // Files are relative to the XML file, as qdl finds them.
    let bundle = args.rawprogram.parent().unwrap_or(Path::new("."));
    let bundle_table =
        rawprogram::find_bundle_table(&raw, &mut |file| table_head(&bundle.join(file)));
    let mut tables: Vec<Table> = bundle_table.iter().map(|(_, t)| t.clone()).collect();
    if let Some(path) = args.device_mibib {
        let sector = raw
            .programs
            .first()
            .map_or(2048, |p| p.sector_size as usize);
        tables.push(device_table(path, sector)?);
    }
    let plan = rawprogram::plan_import(
        &raw,
        &patches,
        &ImportOptions {
            tables: &tables,
            partition_table: args.with_partition_table,
        },
    )
    .map_err(|e| bundle_error(args.rawprogram, &e))?;
    if plan.images.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: no image to import (every entry was skipped or left out)",
                args.rawprogram.display()
            ),
        )
        .into());
    }
    let mut sizes = Vec::with_capacity(plan.images.len());
    let mut files = Vec::with_capacity(plan.images.len());
    for image in &plan.images {
        let path = bundle.join(&image.file);
        let size = file_size(&path)?;
        if let Some(capacity) = image.capacity
            && size > capacity
        {
            return Err(Error::new(
                ErrorKind::ImageTooLarge,
                format!(
                    "{} is {size} bytes, partition '{}' holds {capacity} (num_partition_sectors x SECTOR_SIZE_IN_BYTES)",
                    path.display(),
                    image.partition
                ),
            )
            .into());
        }
        sizes.push((image.partition.clone(), size));
        files.push(canonical(&path)?);
    }
    check_table(&plan, bundle_table.as_ref(), bundle, &sizes)?;

    let programmer_len = file_size(args.programmer)?;
    if programmer_len == 0 || programmer_len > veriflash_mdm9x07::MAX_PROGRAMMER_LEN {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{}: {programmer_len} bytes; a programmer has 1 to {} bytes",
                args.programmer.display(),
                veriflash_mdm9x07::MAX_PROGRAMMER_LEN
            ),
        )
        .into());
    }
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(
        &mut std::fs::File::open(args.programmer).map_err(|e| io_error(args.programmer, &e))?,
        &mut magic,
    )
    .map_err(|e| io_error(args.programmer, &e))?;
    if magic != *b"\x7fELF" {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is not an ELF file: a Firehose programmer (prog_nand_firehose_9x07.mbn) is one",
                args.programmer.display()
            ),
        )
        .into());
    }

    let out_dir = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let out_dir = canonical(out_dir)?;
    let rel = |path: &Path| {
        relative(&out_dir, path).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{}: not a UTF-8 path", path.display()),
            )
        })
    };
    let mut image = vec![ImageEntry {
        name: veriflash_mdm9x07::PROGRAMMER_PARTITION.to_owned(),
        partition: veriflash_mdm9x07::PROGRAMMER_PARTITION.to_owned(),
        file: rel(&canonical(args.programmer)?)?,
    }];
    // The geometry the bundle is for, as the image the session checks against the device
    // (veriflash_mdm9x07::geometry), written beside the description.
    let geometry_file = match plan.geometry {
        Some(g) => {
            let mut name = args.out.file_stem().unwrap_or_default().to_os_string();
            name.push(format!(".{}", g.tag()));
            let path = out_dir.join(name);
            veriflash_core::output::write_atomically(&path, &[args.rawprogram], |file| {
                std::io::Write::write_all(file, &g.descriptor()).map_err(|e| io_error(&path, &e))
            })?;
            image.push(ImageEntry {
                name: GEOMETRY_PARTITION.to_owned(),
                partition: GEOMETRY_PARTITION.to_owned(),
                file: rel(&path)?,
            });
            Some((g, path))
        }
        None => None,
    };
    for (i, file) in plan.images.iter().zip(&files) {
        image.push(ImageEntry {
            name: i.partition.clone(),
            partition: i.partition.clone(),
            file: rel(file)?,
        });
    }
    let description = Description {
        product: args.product,
        chipset: args.chipset,
        version: args.version,
        security_version: args.security_version,
        hardware_revisions: args.hardware_revisions,
        image,
    };
    let text = toml::to_string(&description).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("writing the description: {e}"),
        )
    })?;
    let header = format!(
        "# Made by `veriflash import-qdl` from {}; sign it with `veriflash pack --manifest {} --key KEY.pem --out PKG`.\n",
        args.rawprogram.display(),
        args.out.display()
    );
    veriflash_core::output::write_atomically(args.out, &[args.rawprogram], |file| {
        std::io::Write::write_all(file, header.as_bytes())
            .and_then(|()| std::io::Write::write_all(file, text.as_bytes()))
            .map_err(|e| io_error(args.out, &e))
    })?;

    for note in &plan.notes {
        println!("note: {note}");
    }
    match &geometry_file {
        Some((g, path)) => println!(
            "NAND geometry {g} ({}): kept as image '{GEOMETRY_PARTITION}' ({}), checked against the device before anything is written",
            g.tag(),
            path.display()
        ),
        None => println!(
            "note: the bundle states no PAGES_PER_BLOCK, so the package carries no NAND geometry"
        ),
    }
    if plan.rewrites_partition_table {
        println!(
            "the first image rewrites the device's partition table (MIBIB): flash it with --allow-partition-table"
        );
    }
    println!(
        "wrote {}: programmer ({}) then {} image{}:",
        args.out.display(),
        human_size(programmer_len),
        plan.images.len(),
        if plan.images.len() == 1 { "" } else { "s" }
    );
    for (i, (_, size)) in plan.images.iter().zip(&sizes) {
        println!(
            "  {:<12} {:>10}  {}",
            i.partition,
            human_size(*size),
            i.file
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_and_descend() {
        assert_eq!(
            relative(Path::new("/a/b"), Path::new("/a/c/d.img")).as_deref(),
            Some("../c/d.img")
        );
        assert_eq!(
            relative(Path::new("/a"), Path::new("/a/x.img")).as_deref(),
            Some("x.img")
        );
    }
}
