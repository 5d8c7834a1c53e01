//! The `hourglass` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    hourglass::cli::main()
}
