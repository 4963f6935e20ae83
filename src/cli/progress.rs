//! Pull progress on the terminal: per-layer bars on a TTY, plain lines otherwise,
//! nothing with `-q`. All on stderr (stdout carries the digest).

use crate::pull::Progress;
use oci_spec::image::Descriptor;
use std::sync::Mutex;

/// What the user sees: per-layer bars on a terminal, plain lines otherwise, nothing
/// with `-q`. All on stderr (stdout carries the digest).
/// How pull progress is shown.
pub enum Terminal {
    Quiet,
    Plain,
    Bars {
        multi: indicatif::MultiProgress,
        bars: Mutex<Vec<indicatif::ProgressBar>>,
    },
}

impl Terminal {
    pub fn new(quiet: bool) -> Terminal {
        use std::io::IsTerminal;
        if quiet {
            Terminal::Quiet
        } else if std::io::stderr().is_terminal() {
            Terminal::Bars {
                multi: indicatif::MultiProgress::new(),
                bars: Mutex::new(Vec::new()),
            }
        } else {
            Terminal::Plain
        }
    }

    fn bar(&self, i: usize) -> Option<indicatif::ProgressBar> {
        match self {
            Terminal::Bars { bars, .. } => bars
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(i)
                .cloned(),
            _ => None,
        }
    }
}

impl Progress for Terminal {
    fn line(&self, s: &str) {
        match self {
            Terminal::Quiet => {}
            Terminal::Plain => eprintln!("{s}"),
            Terminal::Bars { multi, .. } => {
                let _ = multi.println(s);
            }
        }
    }

    fn start(&self, layers: &[Descriptor]) {
        match self {
            Terminal::Quiet => {}
            Terminal::Plain => {
                for (i, l) in layers.iter().enumerate() {
                    eprintln!(
                        "layer {}/{}: {} ({} bytes)",
                        i + 1,
                        layers.len(),
                        l.digest(),
                        l.size()
                    );
                }
            }
            Terminal::Bars { multi, bars } => {
                let style = indicatif::ProgressStyle::with_template(
                    "{prefix} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
                let mut v = bars.lock().unwrap_or_else(|e| e.into_inner());
                for l in layers {
                    let b = multi.add(indicatif::ProgressBar::new(l.size()));
                    b.set_style(style.clone());
                    let d = l.digest().to_string();
                    b.set_prefix(d.chars().skip(7).take(12).collect::<String>());
                    v.push(b);
                }
            }
        }
    }

    fn bytes(&self, i: usize, n: u64) {
        if let Some(b) = self.bar(i) {
            b.set_position(n);
        }
    }

    fn unpacking(&self, i: usize) {
        if let Some(b) = self.bar(i) {
            b.set_position(b.length().unwrap_or(0));
            b.set_message("unpacking");
        }
    }

    /// Take the bars off the terminal (the digest goes to stdout next).
    fn finish_layers(&self) {
        if let Terminal::Bars { multi, .. } = self {
            let _ = multi.clear();
        }
    }

    fn done(&self, i: usize) {
        match self {
            Terminal::Plain => eprintln!("layer {}: applied", i + 1),
            _ => {
                if let Some(b) = self.bar(i) {
                    b.finish_with_message("done");
                }
            }
        }
    }
}
