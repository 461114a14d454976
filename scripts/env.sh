# Sourced by the scripts: where build output lives. Kept outside the clone so
# that every checkout on this machine shares it and a rebuild stays quick.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dropsync/target}"
