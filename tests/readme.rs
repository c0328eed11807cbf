//! The README's exit-status table is a public contract: it must list exactly the error kinds
//! the library has, with their codes and names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use veriflash::ErrorKind;

#[test]
fn readme_exit_status_table_matches_the_error_kinds() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table: BTreeSet<(u8, String)> = readme
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = cells.get(1)?.parse::<u8>().ok()?;
            let name = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((code, name.to_owned()))
        })
        .collect();
    let kinds: BTreeSet<(u8, String)> = ErrorKind::ALL
        .iter()
        .map(|k| (k.code(), k.name().to_owned()))
        .collect();
    assert_eq!(
        table, kinds,
        "README exit-status table and ErrorKind disagree"
    );
}
