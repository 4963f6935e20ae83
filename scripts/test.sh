#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12, as root:
#   bash scripts/test.sh
# Installs what the tests need (scripts/setup-host.sh), starts the local registries
# (scripts/registry.sh) and a three-node Slurm cluster (scripts/slurm.sh), builds the test images (scripts/test-images.sh), then runs
# formatting, lint and every test. Rootless paths are exercised as the unprivileged
# users warren-ci (with a subuid range) and warren-nosub (without).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (it installs packages and creates test users)" >&2; exit 1; }

export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup-host.sh   # also Rust, when none new enough is installed
command -v cargo >/dev/null || { echo "test.sh: cargo not found after scripts/setup-host.sh" >&2; exit 1; }

# Build where the unprivileged test users can execute the binary (a clone under /root
# is not traversable for them).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/warren-target}
mkdir -p "$CARGO_TARGET_DIR" && chmod 0755 "$CARGO_TARGET_DIR"
export WARREN_TEST_STATE=${WARREN_TEST_STATE:-/var/tmp/warren-test}

cleanup() { bash scripts/slurm.sh stop || true; bash scripts/registry.sh stop || true; }
trap cleanup EXIT
bash scripts/registry.sh start
# Three simulated Slurm nodes on this machine for the tests/slurm_*.rs (scripts/slurm.sh).
bash scripts/slurm.sh start
bash scripts/test-images.sh all
bash scripts/test-images.sh debian   # debootstrap minbase, ~30-90 s; cached after the first run
bash scripts/test-images.sh openmpi  # Open MPI + our MPI programs (tests/mpi_*.rs), cached
bash scripts/test-images.sh mpich    # MPICH's ABI: the injection tests' refusal case, cached

# Debian 12's rustc-web has neither rustfmt nor clippy (rustup has both): without them
# these two checks are skipped, loudly; the tests still run.
if cargo fmt --version >/dev/null 2>&1; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
else
  echo "== SKIPPED cargo fmt --check: no rustfmt for this toolchain (rustup component add rustfmt)"
fi
if cargo clippy --version >/dev/null 2>&1; then
  echo "== cargo clippy"
  cargo clippy --workspace --all-targets -q -- -D warnings
else
  echo "== SKIPPED cargo clippy: no clippy for this toolchain (rustup component add clippy)"
fi
echo "== cargo test"
# Everything the tests need is installed above: a test that would skip fails instead.
export WARREN_TEST_NO_SKIP=1
cargo test --workspace --lib --bins --tests --no-fail-fast -- --test-threads="${WARREN_TEST_THREADS:-2}"

# Nothing may be left behind by the tests.
left=$(grep -cE 'fuse\.(squashfuse|fuse-overlayfs)|squashfuse|fuse-overlayfs| overlay ' /proc/self/mountinfo || true)
procs=$(( $(pgrep -c -f 'squashfuse|fuse-overlayfs' || true) + $(pgrep -c -x warren-sqfs || true) ))
if [ "${left:-0}" -gt 0 ] || [ "${procs:-0}" -gt 0 ]; then
  echo "test.sh: leftovers after tests: $left mounts, $procs FUSE processes" >&2
  grep -E 'squashfuse|fuse-overlayfs|overlay' /proc/self/mountinfo >&2 || true
  exit 1
fi
bash scripts/test-packages.sh   # make deb/rpm twice (reproducible), lintian, rpm -q, install in a Debian 12 root
echo "test.sh: all tests passed, nothing left behind"
