//! `dropsync generate`: the man pages and shell completions, made from the
//! same clap definitions as `--help`, so they cannot drift from it.
//! `scripts/install` and the Debian package call it; users need not.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use super::Cli;

/// Writes `dropsync.1` and one page per command (`dropsync-run.1`, ...)
/// into `dir`, as git does; returns the files written.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let command = Cli::command();
    let mut written = Vec::new();
    let top = dir.join("dropsync.1");
    write_page(&top, command.clone())?;
    written.push(top);
    for sub in command.get_subcommands().filter(|c| !c.is_hide_set()) {
        // A command's page is named and titled as it is typed, joined by
        // dashes, so `man dropsync-run` finds `dropsync run`.
        let name = format!("dropsync-{}", sub.get_name());
        let page = sub.clone().name(name.clone()).version(super::version());
        let path = dir.join(format!("{name}.1"));
        write_page(&path, page)?;
        written.push(path);
    }
    Ok(written)
}

fn write_page(path: &Path, command: clap::Command) -> std::io::Result<()> {
    let mut text = Vec::new();
    clap_mangen::Man::new(command).render(&mut text)?;
    std::fs::write(path, text)
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> std::io::Result<()> {
    // clap_complete panics when its writer fails; a buffer never does, and
    // a closed pipe is then an error like any other command's.
    let mut script = Vec::new();
    clap_complete::generate(
        shell,
        &mut offered(&Cli::command()),
        "dropsync",
        &mut script,
    );
    out.write_all(&script)
}

/// `command` as completions offer it: without its hidden commands and
/// arguments (`generate`), which clap_complete's bash and zsh scripts list
/// like any other. clap cannot take a command out, so the top level is made
/// anew from what is shown; the commands under it are kept whole.
fn offered(command: &clap::Command) -> clap::Command {
    let mut offered = clap::Command::new(command.get_name().to_string())
        .args(
            command
                .get_arguments()
                .filter(|a| !a.is_hide_set())
                .cloned(),
        )
        .subcommands(
            command
                .get_subcommands()
                .filter(|c| !c.is_hide_set())
                .cloned(),
        );
    if let Some(about) = command.get_about() {
        offered = offered.about(about.clone());
    }
    if let Some(version) = command.get_version() {
        offered = offered.version(version.to_string());
    }
    offered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: clap_complete::Shell) -> String {
        let mut out = Vec::new();
        completions(shell, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// `generate` is hidden from `--help`; the completions used to offer it
    /// all the same (bash listed it among the commands).
    #[test]
    fn completions_offer_every_command_but_the_hidden_one() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let script = script(shell);
            assert!(!script.contains("generate"), "{shell}: {script}");
            assert!(!script.contains("completions"), "{shell}: {script}");
            for shown in ["check", "daemon", "notify", "dry-run", "config", "version"] {
                assert!(script.contains(shown), "{shell} lacks {shown}: {script}");
            }
        }
    }
}
