//! The `warren` binary: parse the command line, run one command, print one error line.

fn main() {
    raise_open_file_limit();
    std::process::exit(warren::cli::main());
}

/// A pull holds one spool file per layer until the squashfs is written, so an image of
/// a few thousand layers needs more descriptors than the usual soft limit of 1024:
/// raise the soft limit to the hard one (process-global, hence here, in the front end).
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
