//! Strict TOML descriptions: the one place that decides which keys a file may have, for every
//! file people write for veriflash — a package description (`update.toml`), a file device's
//! layout (`layout.toml`), the MDM9x07 product table (`mdm9x07-products.toml`).
//!
//! A misspelt key silently ignored changes what is made: `hardware_revision` for
//! `hardware_revisions` signs a package for any hardware, `[trust_rotaton]` one that rotates
//! nothing. So [`check`] compares a file with its [`Table`] schema before it is deserialized:
//! an unknown key is an error (or, where a file allows keys of a newer veriflash, a warning),
//! named with its line and the known key it most resembles, and a missing required key names
//! the misspelt one that was probably meant ("missing key 'version'; did you mean 'verison'
//! (line 3)?"). The values are left to the file's own deserializer.

use std::fmt;

use toml::de::{DeTable, DeValue};

/// The keys one table of a file may have.
#[derive(Debug)]
pub struct Table {
    /// How messages name the table: empty for the file's top level, else as it is written,
    /// `[trust_rotation]` or `[[image]]`.
    pub name: &'static str,
    /// Its keys.
    pub keys: &'static [Key],
    /// Whether unknown keys are errors here even in a file that allows them elsewhere
    /// ([`UnknownKeys::Warn`]): a table whose every key decides what devices trust.
    pub always_strict: bool,
}

/// One key of a [`Table`].
#[derive(Debug)]
pub struct Key {
    /// The key.
    pub name: &'static str,
    /// Whether the table must have it.
    pub required: bool,
    /// For a table or an array of tables, the keys of each.
    pub table: Option<&'static Table>,
}

impl Key {
    /// A key the table must have.
    #[must_use]
    pub const fn required(name: &'static str) -> Self {
        Self {
            name,
            required: true,
            table: None,
        }
    }

    /// A key the table may have.
    #[must_use]
    pub const fn optional(name: &'static str) -> Self {
        Self {
            name,
            required: false,
            table: None,
        }
    }

    /// A table, or an array of tables, with the keys of `table`.
    #[must_use]
    pub const fn table(name: &'static str, table: &'static Table, required: bool) -> Self {
        Self {
            name,
            required,
            table: Some(table),
        }
    }
}

/// What an unknown key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownKeys {
    /// An error: the default, since a misspelt key changes what is made.
    Refuse,
    /// A warning: for a file that may come from a newer veriflash (forward compatibility),
    /// which the user asked to accept.
    Warn,
}

/// Why a file does not fit its schema: every problem found, each with its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<String>,
    unknown_keys: bool,
}

impl ConfigError {
    /// Each problem, in the file's order by table.
    #[must_use]
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Whether an unknown key is among the problems (which [`UnknownKeys::Warn`] would have
    /// let through, outside always-strict tables).
    #[must_use]
    pub fn has_unknown_keys(&self) -> bool {
        self.unknown_keys
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("; "))
    }
}

impl std::error::Error for ConfigError {}

/// Checks the keys of the TOML `text` against `schema`; returns the warnings for unknown keys
/// that [`UnknownKeys::Warn`] let through.
///
/// # Errors
/// [`ConfigError`] naming every unknown key that is refused (with the known key it most
/// resembles) and every missing required key (with the unknown key that probably meant it),
/// each with its line; or the TOML parser's error for text that is not TOML.
pub fn check(text: &str, schema: &Table, unknown: UnknownKeys) -> Result<Vec<String>, ConfigError> {
    let document = DeTable::parse(text).map_err(|e| ConfigError {
        problems: vec![e.to_string().trim_end().to_owned()],
        unknown_keys: false,
    })?;
    let mut found = Found::default();
    walk(text, document.get_ref(), schema, "", unknown, &mut found);
    if found.errors.is_empty() {
        Ok(found.warnings)
    } else {
        Err(ConfigError {
            problems: found.errors,
            unknown_keys: found.unknown_refused,
        })
    }
}

/// What [`walk`] found.
#[derive(Default)]
struct Found {
    errors: Vec<String>,
    warnings: Vec<String>,
    unknown_refused: bool,
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        .saturating_add(1)
}

fn walk(
    text: &str,
    table: &DeTable<'_>,
    schema: &Table,
    at: &str,
    unknown: UnknownKeys,
    found: &mut Found,
) {
    // Unknown keys of this table: name and line.
    let mut strangers: Vec<(&str, usize)> = Vec::new();
    for (key, value) in table {
        let name: &str = key.get_ref();
        let Some(known) = schema.keys.iter().find(|k| k.name == name) else {
            strangers.push((name, line_of(text, key.span().start)));
            continue;
        };
        let Some(sub) = known.table else {
            continue;
        };
        match value.get_ref() {
            DeValue::Table(inner) => walk(text, inner, sub, sub.name, unknown, found),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let DeValue::Table(inner) = item.get_ref() {
                        let at = format!("{} #{}", sub.name, i.saturating_add(1));
                        walk(text, inner, sub, &at, unknown, found);
                    }
                }
            }
            // A value of the wrong type: the deserializer says so.
            _ => {}
        }
    }
    let prefix = if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    };
    for key in schema.keys.iter().filter(|k| k.required) {
        if table.get(key.name).is_some() {
            continue;
        }
        let meant = strangers
            .iter()
            .position(|(name, _)| did_you_mean(name, [key.name]).is_some());
        let message = match meant.map(|i| strangers.remove(i)) {
            Some((name, line)) => format!(
                "{prefix}missing key '{}'; did you mean '{name}' (line {line})?",
                key.name
            ),
            None => format!("{prefix}missing key '{}'", key.name),
        };
        found.errors.push(message);
    }
    let refuse = unknown == UnknownKeys::Refuse || schema.always_strict;
    for (name, line) in strangers {
        let hint = did_you_mean(name, schema.keys.iter().map(|k| k.name))
            .map(|known| format!("; did you mean '{known}'?"))
            .unwrap_or_default();
        if refuse {
            found
                .errors
                .push(format!("{prefix}unknown key '{name}' (line {line}){hint}"));
            found.unknown_refused = true;
        } else {
            found.warnings.push(format!(
                "{prefix}unknown key '{name}' (line {line}) ignored{hint}"
            ));
        }
    }
}

/// The candidate `word` was most likely meant as: the nearest by edit distance (a swap of
/// two neighbours counting once), close enough for its length, or one that starts with `word`
/// (`oem` for `oem_id`). `None` when none is close.
#[must_use]
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let distance = edit_distance(&word, candidate);
            let close = distance <= (word.chars().count().min(candidate.len()) / 3).max(1);
            let prefix = word.chars().count() >= 3
                && (candidate.starts_with(word.as_str()) || word.starts_with(candidate));
            (close || prefix).then_some((distance, candidate))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// The optimal string alignment distance between `a` and `b`: insertions, deletions,
/// substitutions and swaps of two neighbouring characters, each counting one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the dynamic programme: two back (for swaps), the previous, the current.
    let mut before: Vec<usize> = Vec::new();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut current = Vec::with_capacity(b.len().saturating_add(1));
        current.push(i.saturating_add(1));
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous.get(j).copied().unwrap_or(usize::MAX);
            let delete = previous
                .get(j.saturating_add(1))
                .copied()
                .unwrap_or(usize::MAX);
            let insert = current.get(j).copied().unwrap_or(usize::MAX);
            let mut best = substitute
                .saturating_add(usize::from(ca != cb))
                .min(delete.saturating_add(1))
                .min(insert.saturating_add(1));
            let swapped = i > 0 && j > 0 && a.get(i - 1) == Some(&cb) && b.get(j - 1) == Some(&ca);
            if swapped {
                let two_back = before.get(j - 1).copied().unwrap_or(usize::MAX);
                best = best.min(two_back.saturating_add(1));
            }
            current.push(best);
        }
        before = std::mem::replace(&mut previous, current);
    }
    previous.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    static IMAGE: Table = Table {
        name: "[[image]]",
        keys: &[Key::required("name"), Key::optional("chunk_size")],
        always_strict: false,
    };
    static ROTATION: Table = Table {
        name: "[rotation]",
        keys: &[Key::required("version")],
        always_strict: true,
    };
    static TOP: Table = Table {
        name: "",
        keys: &[
            Key::required("version"),
            Key::optional("hardware_revisions"),
            Key::table("image", &IMAGE, false),
            Key::table("rotation", &ROTATION, false),
        ],
        always_strict: false,
    };

    #[test]
    fn edit_distances_count_a_swap_once() {
        assert_eq!(edit_distance("version", "version"), 0);
        assert_eq!(edit_distance("verison", "version"), 1);
        assert_eq!(edit_distance("hardware_revision", "hardware_revisions"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggests_the_nearest_known_key_or_none() {
        let keys = ["product", "version", "oem_id", "model_id"];
        assert_eq!(did_you_mean("verison", keys), Some("version"));
        assert_eq!(did_you_mean("Product", keys), Some("product"));
        assert_eq!(did_you_mean("oem", keys), Some("oem_id"));
        assert_eq!(did_you_mean("colour", keys), None);
        assert_eq!(did_you_mean("x", keys), None);
    }

    #[test]
    fn an_unknown_key_is_an_error_with_its_line_and_the_key_meant() {
        let text = "version = 1\nhardware_revision = [\"r1\"]\n";
        let err = check(text, &TOP, UnknownKeys::Refuse).unwrap_err();
        assert!(err.has_unknown_keys());
        assert_eq!(
            err.to_string(),
            "unknown key 'hardware_revision' (line 2); did you mean 'hardware_revisions'?"
        );
        // Allowed: a warning, and nothing refused.
        let warnings = check(text, &TOP, UnknownKeys::Warn).unwrap();
        assert_eq!(
            warnings,
            [
                "unknown key 'hardware_revision' (line 2) ignored; did you mean 'hardware_revisions'?"
            ]
        );
    }

    #[test]
    fn a_missing_key_names_the_misspelt_one_beside_it() {
        let err = check("verison = 1\n", &TOP, UnknownKeys::Warn).unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing key 'version'; did you mean 'verison' (line 1)?"
        );
        let err = check("", &TOP, UnknownKeys::Refuse).unwrap_err();
        assert_eq!(err.to_string(), "missing key 'version'");
        assert!(!err.has_unknown_keys());
    }

    #[test]
    fn nested_tables_and_arrays_of_tables_are_checked_and_named() {
        let text = "version = 1\n[[image]]\nname = \"a\"\n[[image]]\nnmae = \"b\"\nchunksize = 4\n";
        let err = check(text, &TOP, UnknownKeys::Refuse).unwrap_err();
        assert_eq!(
            err.problems(),
            [
                "[[image]] #2: missing key 'name'; did you mean 'nmae' (line 5)?",
                "[[image]] #2: unknown key 'chunksize' (line 6); did you mean 'chunk_size'?",
            ]
        );
        // A misspelt table is an unknown key like any other.
        let err = check(
            "version = 1\n[rotaton]\nversion = 2\n",
            &TOP,
            UnknownKeys::Refuse,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown key 'rotaton' (line 2); did you mean 'rotation'?"
        );
    }

    #[test]
    fn an_always_strict_table_refuses_unknown_keys_even_when_others_may_have_them() {
        let text = "version = 1\n[rotation]\nversion = 2\nthreshhold = 1\n";
        let err = check(text, &TOP, UnknownKeys::Warn).unwrap_err();
        assert_eq!(
            err.to_string(),
            "[rotation]: unknown key 'threshhold' (line 4)"
        );
    }

    #[test]
    fn text_that_is_not_toml_is_the_parsers_error() {
        let err = check("version = [", &TOP, UnknownKeys::Refuse).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(!err.has_unknown_keys());
    }
}
