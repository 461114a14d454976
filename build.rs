//! Bakes where libduckdb is found into the binary's rpath, so `dropsync`
//! runs without LD_LIBRARY_PATH:
//!
//! 1. `$ORIGIN/../lib/dropsync`, first: an installed binary
//!    (`scripts/install`, the Debian package) finds the libduckdb copied
//!    beside it, whoever runs it, never the builder's home.
//! 2. the directory of the prebuilt libduckdb this build linked against
//!    (`DUCKDB_LIB_DIR`), so `cargo build` / `cargo test` binaries run in
//!    place. In an installed binary this entry is never reached: the first
//!    one holds the library.
//!
//! The bundled build links DuckDB statically and needs neither.
fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_BUNDLED").is_some() {
        return;
    }
    // Passed to the linker as is (no shell): `$ORIGIN` stays literal, and
    // the dynamic loader expands it to the binary's own directory.
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../lib/dropsync");
    if let Some(dir) = std::env::var_os("DUCKDB_LIB_DIR") {
        let dir = std::path::PathBuf::from(dir);
        let dir = dir.canonicalize().unwrap_or(dir);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
