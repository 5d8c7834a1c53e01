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

/// Prints the main man page; with `dir`, writes it and one page per command there (the main
/// page's SEE ALSO names them: `hourglass-run(1)`, ...), and prints their paths.
pub(super) fn man(dir: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command().name("hourglass");
    // Built: with clap's own `help` command, which the main page names too.
    cmd.build();
    let Some(dir) = dir else {
        let mut text = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut text)?;
        return print(&text);
    };
    std::fs::create_dir_all(dir)?;
    let mut pages = vec![("hourglass".to_string(), clap_mangen::Man::new(cmd.clone()))];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("hourglass-{}", sub.get_name());
        pages.push((name.clone(), clap_mangen::Man::new(sub.clone().name(name))));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut text = Vec::new();
        page.render(&mut text)?;
        std::fs::write(&path, text)?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to stdout; a reader that stopped early (`| head`) is not an error.
fn print(text: &[u8]) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
