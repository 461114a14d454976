# Sourced by the scripts: where the prebuilt libduckdb and the build output
# live. Both sit outside the checkout, in one cache per machine, so every
# clone shares them: a rebuild stays quick and binaries keep finding DuckDB.
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
DROPSYNC_CACHE="${DROPSYNC_CACHE:-$HOME/.cache/dropsync}"
DUCKDB_PACKAGE="@duckdb/node-bindings-linux-x64"
DUCKDB_VERSION="1.5.6-r.1" # DuckDB 1.5.6, matching the duckdb crate =1.10506.1
DUCKDB_TARBALL_SHA256="1b9f82478539bb9a1d1df44bd103121a12ae52142c07158dc52b97d2ec1d69ff"
export DUCKDB_LIB_DIR="$DROPSYNC_CACHE/libduckdb/$DUCKDB_VERSION"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DROPSYNC_CACHE/target}"
# scripts/package builds the Debian package with this cargo-deb.
CARGO_DEB_VERSION="3.8.0"
