//! Shell completions (`hourglass completions bash`) and the man page (`hourglass man`), both
//! generated from the command line's own definition, so they never drift from it.

use std::process::ExitCode;

use clap::CommandFactory;

use super::Cli;

/// Prints the completion script for `shell`.
pub(super) fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut cmd, "hourglass", &mut text);
    print(&text)
}

/// Prints the man page, with a page section for each subcommand after the main one.
pub(super) fn man() -> anyhow::Result<ExitCode> {
    let cmd = Cli::command().name("hourglass");
    let mut text = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut text)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("hourglass-{}", sub.get_name());
        clap_mangen::Man::new(sub.clone().name(name)).render(&mut text)?;
    }
    print(&text)
}

/// Writes `text` to stdout; a reader that stopped early (`| head`) is not an error.
fn print(text: &[u8]) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
