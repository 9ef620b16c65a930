//! The `tlsinspect` binary: parse the command line and hand over to `cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tlsinspect::cli::main()
}
