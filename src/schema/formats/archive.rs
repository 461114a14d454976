//! gzip and zip drops, expanded while they are read, with a limit on what
//! they may expand to: a few kilobytes that inflate to terabytes (a
//! decompression bomb) must fail the file, not fill the disk or the memory.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

use super::DropError;
use crate::config::DecompressLimits;

/// Past this size, the ratio to the compressed size is checked: small
/// files with long runs of one value compress far better than real exports.
const RATIO_FREE_BYTES: u64 = 16 << 20;

/// Reads all of `reader` (the expansion of `compressed` bytes), within `limits`.
fn read_bounded(
    mut reader: impl Read,
    compressed: u64,
    file: &str,
    what: &str,
    limits: DecompressLimits,
) -> Result<Vec<u8>, DropError> {
    let max_bytes = limits.max_bytes.get();
    let max_ratio = limits.max_ratio.get();
    let mut out = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::InvalidInput | ErrorKind::InvalidData | ErrorKind::UnexpectedEof
                ) =>
            {
                return Err(DropError::content(
                    file,
                    format!(
                        "{what} is damaged or not what its name says: {e}; nothing was applied"
                    ),
                ));
            }
            Err(source) => {
                return Err(DropError::Io {
                    file: file.to_string(),
                    source,
                });
            }
        };
        out.extend_from_slice(&buffer[..n]);
        let total = out.len() as u64;
        if total > max_bytes {
            return Err(DropError::content(
                file,
                format!(
                    "{what} expands to more than decompress.max_bytes ({max_bytes} bytes); nothing was applied. A decompression bomb, or a larger export than expected: raise decompress.max_bytes if it is genuine"
                ),
            ));
        }
        if total > RATIO_FREE_BYTES && total > compressed.max(1).saturating_mul(max_ratio) {
            return Err(DropError::content(
                file,
                format!(
                    "{what} expands more than decompress.max_ratio ({max_ratio}) times its {compressed} compressed bytes; nothing was applied. A decompression bomb? Raise decompress.max_ratio if it is genuine"
                ),
            ));
        }
    }
    Ok(out)
}

fn open(path: &Path, file: &str) -> Result<File, DropError> {
    File::open(path).map_err(|source| DropError::Io {
        file: file.to_string(),
        source,
    })
}

/// The content of a gzip file (every member, as `gzip -d` gives it).
pub(super) fn gunzip(
    path: &Path,
    file: &str,
    limits: DecompressLimits,
) -> Result<Vec<u8>, DropError> {
    let input = open(path, file)?;
    let compressed = input
        .metadata()
        .map_err(|source| DropError::Io {
            file: file.to_string(),
            source,
        })?
        .len();
    let decoder = flate2::read::MultiGzDecoder::new(BufReader::new(input));
    read_bounded(decoder, compressed, file, "the gzip file", limits)
}

/// The name and content of a zip archive's one file, or of `member`.
pub(super) fn unzip(
    path: &Path,
    file: &str,
    member: Option<&str>,
    limits: DecompressLimits,
) -> Result<(String, Vec<u8>), DropError> {
    let input = open(path, file)?;
    let mut archive = zip::ZipArchive::new(BufReader::new(input))
        .map_err(|e| DropError::content(file, format!("not a readable zip archive: {e}")))?;
    // Folders and the resource forks macOS adds are not drops.
    let files: Vec<String> = archive
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<Vec<String>, _>>()
        .map_err(|e| DropError::content(file, format!("not a readable zip archive: {e}")))?
        .into_iter()
        .filter(|n| !n.ends_with('/') && !n.starts_with("__MACOSX/"))
        .collect();
    let base = |n: &str| n.rsplit('/').next().unwrap_or(n).to_string();
    let listed = || {
        let mut names = files.clone();
        names.sort();
        let shown: Vec<String> = names.iter().take(40).map(|n| format!("`{n}`")).collect();
        if names.len() > shown.len() {
            format!("{}, … ({} in all)", shown.join(", "), names.len())
        } else {
            shown.join(", ")
        }
    };
    let name = match member {
        Some(wanted) => files
            .iter()
            .find(|n| n.as_str() == wanted)
            .or_else(|| files.iter().find(|n| base(n) == wanted))
            .cloned()
            .ok_or_else(|| {
                DropError::content(
                    file,
                    format!(
                        "the zip archive has no member `{}`; it holds {}",
                        crate::config::echo(wanted),
                        listed()
                    ),
                )
            })?,
        None => match files.as_slice() {
            [one] => one.clone(),
            [] => return Err(DropError::content(file, "the zip archive holds no file")),
            _ => {
                return Err(DropError::content(
                    file,
                    format!(
                        "the zip archive holds {} files: {}; set the integration's member = \"NAME\" to say which to read",
                        files.len(),
                        listed()
                    ),
                ));
            }
        },
    };
    let entry = archive.by_name(&name).map_err(|e| {
        DropError::content(
            file,
            format!("cannot read `{name}` in the zip archive: {e}"),
        )
    })?;
    let compressed = entry.compressed_size();
    let what = format!("`{name}` in the zip archive");
    let bytes = read_bounded(entry, compressed, file, &what, limits)?;
    Ok((name, bytes))
}
