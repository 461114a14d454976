//! The console's "Upload a file" form: a multipart POST whose file part is
//! streamed to staging through the same path as the API's upload (bounded
//! memory, size-limited, the name checked to be a plain file name and never
//! used as a path), then the browser is sent to the execution's page.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use maud::{Markup, html};

use super::api::{accept_upload, known_integration, upload_name};
use super::pages::{PageError, encode};
use super::{ApiError, Console};

pub(super) fn routes() -> Router<Console> {
    Router::new().route(
        "/integrations/{name}/upload",
        // The file part is counted against max_upload_bytes as it streams;
        // axum's default cap (2 MB, for buffered bodies) does not apply.
        post(upload).layer(DefaultBodyLimit::disable()),
    )
}

async fn upload(
    State(console): State<Console>,
    Path(name): Path<String>,
    mut form: Multipart,
) -> Result<Response, PageError> {
    known_integration(&console.config, &name)?;
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request(
            "invalid_form",
            format!("the form cannot be read: {}", e.body_text()),
        )
    };
    while let Some(field) = form.next_field().await.map_err(unreadable)? {
        if field.name() != Some("file") {
            continue;
        }
        if field.file_name().is_none_or(str::is_empty) {
            break;
        }
        let file_name = upload_name(field.file_name())?;
        let id = accept_upload(&console, &name, &file_name, field).await?;
        return Ok(Redirect::to(&format!("/runs/{id}")).into_response());
    }
    Err(ApiError::bad_request("empty_upload", "choose a file to upload").into())
}

/// The form on an integration's page.
pub(super) fn form(name: &str, max_bytes: u64) -> Markup {
    html! {
        form.panel method="post" enctype="multipart/form-data"
            action={ "/integrations/" (encode(name)) "/upload" } {
            h2 { "Upload a file" }
            p.muted { "Synced as if it had been dropped at the source. Up to " (size(max_bytes)) "." }
            div.row {
                label for="upload-file" { "File" }
                input #upload-file type="file" name="file" required;
            }
            button type="submit" { "Upload and sync" }
        }
    }
}

/// `1 GiB`, `20 MiB`, `512 bytes`.
pub(super) fn size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, scale) in UNITS {
        if bytes >= scale {
            let whole = bytes as f64 / scale as f64;
            return if bytes.is_multiple_of(scale) {
                format!("{} {unit}", bytes / scale)
            } else {
                format!("{whole:.1} {unit}")
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(super::size(1 << 30), "1 GiB");
        assert_eq!(super::size(20 << 20), "20 MiB");
        assert_eq!(super::size(1536), "1.5 KiB");
        assert_eq!(super::size(512), "512 bytes");
    }
}
