//! The `warren` binary: parse the command line, run one command, print one error line.

fn main() {
    std::process::exit(warren::cli::main());
}
