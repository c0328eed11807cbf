//! `veriflash completions SHELL` and `veriflash man`: shell completions and man pages made from
//! the same clap definition that parses the arguments, so they can never describe flags the
//! tool does not have.

use std::io::Write;
use std::path::Path;

use veriflash_core::{Error, ErrorKind};

use crate::output::Failure;

/// Writes the completion script for `shell` to stdout, e.g.
/// `veriflash completions bash > /etc/bash_completion.d/veriflash`.
pub(crate) fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut command = crate::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut command, "veriflash", &mut out);
    out.flush().map_err(|e| io_error("stdout", &e))?;
    Ok(())
}

/// Writes `veriflash.1` to stdout, or with `out_dir` the whole set — `veriflash.1` and one
/// `veriflash-SUBCOMMAND.1` per subcommand — into that directory (for packagers:
/// `veriflash man --out-dir /usr/share/man/man1`).
pub(crate) fn man(out_dir: Option<&Path>) -> Result<(), Failure> {
    let command = crate::command();
    let Some(dir) = out_dir else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(command)
            .render(&mut out)
            .map_err(|e| io_error("stdout", &e))?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|e| io_error(&dir.display().to_string(), &e))?;
    let mut pages = vec![("veriflash".to_owned(), command.clone())];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("veriflash-{}", sub.get_name());
        // The page's title and synopsis name the full command a user types.
        let sub = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("veriflash {}", sub.get_name()));
        pages.push((name, sub));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut buffer = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut buffer)
            .map_err(|e| io_error(&path.display().to_string(), &e))?;
        std::fs::write(&path, buffer).map_err(|e| io_error(&path.display().to_string(), &e))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn io_error(what: &str, e: &std::io::Error) -> Failure {
    Failure::text(Error::new(ErrorKind::Io, format!("{what}: {e}")))
}
