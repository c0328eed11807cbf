//! `veriflash inspect`: what a package claims, read from its prefix only.

use std::path::Path;

use serde_json::json;
use veriflash_core::format::{ObjectIdentifier, RotationAnchor, SignatureBlock, TrustRotation};
use veriflash_core::package::hex;
use veriflash_core::sig::DEFAULT_ALGORITHMS;
use veriflash_core::{AnchorSet, Error, ImageCost, PackageReader, Trust};

use crate::output::{Failure, human_size};
use crate::pack::ratio;

/// The name of a signature algorithm, or its OID when this build does not support it.
pub(crate) fn algorithm_name(oid: &ObjectIdentifier) -> String {
    DEFAULT_ALGORITHMS
        .iter()
        .find(|alg| alg.oid() == *oid)
        .map_or_else(
            || format!("unsupported ({oid})"),
            |alg| alg.name().to_owned(),
        )
}

/// A certificate's subject for display (not verified), or why it cannot be read.
fn subject(der: &[u8]) -> String {
    veriflash_core::sig::certificate_subject(der)
        .unwrap_or_else(|e| format!("(unreadable certificate: {e})"))
}

/// A rotated anchor for display (not verified): a root certificate's subject, or a key's id.
fn anchor_label(anchor: &RotationAnchor) -> String {
    match anchor {
        RotationAnchor::Certificate(der) => format!("root certificate {}", subject(der)),
        RotationAnchor::PublicKey(der) => veriflash_core::sig::VerifyingKey::from_spki_der(der)
            .map_or_else(
                |e| format!("(unreadable key: {e})"),
                |k| format!("{} key {}", k.algorithm_name(), k.key_id()),
            ),
    }
}

fn rotation_json(rotation: Option<&TrustRotation>) -> serde_json::Value {
    rotation.map_or(serde_json::Value::Null, |r| {
        json!({
            "version": r.version,
            "threshold": r.threshold,
            "anchors": r.anchors.iter().map(anchor_label).collect::<Vec<_>>(),
        })
    })
}

fn signatures_json(block: &SignatureBlock) -> serde_json::Value {
    block
        .entries
        .iter()
        .map(|e| {
            json!({
                "algorithm": algorithm_name(&e.algorithm),
                "algorithm_oid": e.algorithm.to_string(),
                "key_id": hex(&e.key_id),
                "certificates": e.certificates.len(),
                "chain": e.certificates.iter().map(|c| subject(c)).collect::<Vec<_>>(),
            })
        })
        .collect()
}

pub(crate) fn run(path: &Path, json: bool) -> Result<(), Failure> {
    let fail = |e: Error| Failure::new(e, json);
    let reader = PackageReader::open(path).map_err(fail)?;
    let manifest = reader.manifest_unverified().map_err(fail)?;
    let header = *reader.header();
    let sigblock = reader.signature_block();
    if json {
        let images: Vec<_> = manifest
            .images
            .iter()
            .map(|i| {
                let compressed = i
                    .stored_chunks
                    .iter()
                    .filter(|c| c.encoding == veriflash_core::format::ChunkEncoding::Zstd)
                    .count();
                let cost = ImageCost::of(i, i.size);
                json!({
                    "name": i.name, "partition": i.partition, "size": i.size,
                    "stored_size": i.stored_size(), "compressed_chunks": compressed,
                    "chunk_size": i.chunk_size, "chunks": i.chunk_count(), "sha256": hex(&i.digest),
                    "source": cost.source.as_ref().map(|source| json!({
                        "size": source.size, "sha256": source.sha256,
                        "chunks_from_source": cost.from_source, "chunks_patched": cost.patched,
                    })),
                })
            })
            .collect();
        let out = json!({
            "verified": false,
            "format_version": header.format_version,
            "manifest_len": header.manifest_len,
            "payload_len": header.payload_len,
            "product": manifest.product,
            "chipset": manifest.chipset,
            "hardware_revisions": manifest.hardware_revisions,
            "software_version": manifest.software_version,
            "security_version": manifest.security_version,
            "images": images,
            "signatures": signatures_json(sigblock),
            "trust_rotation": rotation_json(manifest.trust_rotation.as_ref()),
        });
        crate::events::print(json!({ "ok": true, "package": out }));
        return Ok(());
    }
    println!("package    {}", path.display());
    println!(
        "format     version {}; manifest {}, payload {}",
        header.format_version,
        human_size(u64::from(header.manifest_len)),
        human_size(header.payload_len)
    );
    println!("NOT VERIFIED: this is what the package claims; `veriflash verify` checks it.");
    println!("product    {}", manifest.product);
    println!("chipset    {}", manifest.chipset);
    let revisions = if manifest.hardware_revisions.is_empty() {
        "any".to_owned()
    } else {
        manifest.hardware_revisions.join(", ")
    };
    println!("hardware   {revisions}");
    println!(
        "version    {} (security version {})",
        manifest.software_version, manifest.security_version
    );
    println!("images");
    for i in &manifest.images {
        println!(
            "  {:<16} -> {:<16} {:>10}  {} chunks of {}  sha256 {}",
            i.name,
            i.partition,
            human_size(i.size),
            i.chunk_count(),
            human_size(u64::from(i.chunk_size)),
            hex(&i.digest)
        );
        let cost = ImageCost::of(i, i.size);
        if let Some(source) = &cost.source {
            println!(
                "  {:<16}    delta of the image of {} with sha256 {}: {} chunks copied from it, {} patched, {} carried",
                "",
                human_size(source.size),
                source.sha256,
                cost.from_source,
                cost.patched,
                cost.carried
            );
        }
        if i.is_compressed() {
            let compressed = i
                .stored_chunks
                .iter()
                .filter(|c| c.encoding == veriflash_core::format::ChunkEncoding::Zstd)
                .count();
            println!(
                "  {:<16}    stored {} of {} ({}), {compressed} of {} chunks zstd",
                "",
                human_size(i.stored_size()),
                human_size(i.size),
                ratio(i.stored_size(), i.size),
                i.chunk_count()
            );
        }
    }
    let image_total: u64 = manifest.images.iter().map(|i| i.size).sum();
    if header.payload_len != image_total {
        println!(
            "stored     {} of images in a payload of {} ({})",
            human_size(image_total),
            human_size(header.payload_len),
            ratio(header.payload_len, image_total)
        );
    }
    println!("signatures");
    for e in &sigblock.entries {
        let chain = match e.certificates.len() {
            0 => String::new(),
            n => format!("  (+{n} certificates)"),
        };
        println!(
            "  {:<18} key {}{chain}",
            algorithm_name(&e.algorithm),
            hex(&e.key_id)
        );
        for (i, cert) in e.certificates.iter().enumerate() {
            let role = if i == 0 { "leaf" } else { "chain" };
            println!("    {role:<5} {}", subject(cert));
        }
    }
    if let Some(r) = &manifest.trust_rotation {
        println!(
            "trust rotation to anchor set version {} ({} of {} must sign)",
            r.version,
            r.threshold,
            r.anchors.len()
        );
        for anchor in &r.anchors {
            println!("  {}", anchor_label(anchor));
        }
    }
    Ok(())
}

/// `inspect --delta-from OLD --trust KEYS NEW`: what `pack --delta-from OLD` would make of
/// NEW's images, both packages verified in full.
pub(crate) fn delta(old: &Path, new: &Path, trust: &Path, json: bool) -> Result<(), Failure> {
    let fail = |e: Error| Failure::new(e, json);
    let anchors = AnchorSet::load(trust).map_err(fail)?;
    let trust = Trust::new(anchors);
    let costs = veriflash_core::delta_cost(old, new, &trust.verifier()).map_err(fail)?;
    let (full, delta) = costs.iter().fold((0u64, 0u64), |(f, d), c| {
        (
            f.saturating_add(c.full_bytes),
            d.saturating_add(c.delta_bytes),
        )
    });
    if json {
        crate::events::print(json!({
            "ok": true,
            "delta": { "from": old.display().to_string(), "to": new.display().to_string(),
                       "full_bytes": full, "delta_bytes": delta, "images": costs },
        }));
        return Ok(());
    }
    println!("delta      {} -> {}", old.display(), new.display());
    println!(
        "carried    {} of the full package's {} payload ({})",
        human_size(delta),
        human_size(full),
        ratio(delta, full)
    );
    for c in &costs {
        println!(
            "  {:<16} -> {:<16} {:>10} of {:>10}  {} chunks: {} from the old image, {} patched, {} carried",
            c.name,
            c.partition,
            human_size(c.delta_bytes),
            human_size(c.full_bytes),
            c.chunks,
            c.from_source,
            c.patched,
            c.carried
        );
    }
    Ok(())
}
