//! Email: one plain-text message per event over SMTP, STARTTLS required by
//! default, with certificates verified; the event id is the Message-ID.

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use super::{Event, NotifierConfig, SmtpTls, secret};

/// The sender and recipients must be addresses.
pub(super) fn check_addresses(notifier: &NotifierConfig) -> Result<(), String> {
    for address in notifier.from.iter().chain(&notifier.to) {
        address
            .parse::<Mailbox>()
            .map_err(|e| format!("`{address}` is not an email address: {e}"))?;
    }
    Ok(())
}

pub(super) fn send(notifier: &NotifierConfig, event: &Event) -> Result<(), String> {
    let host = notifier.smtp_host.as_deref().unwrap_or_default();
    let mailbox = |a: &str| a.parse::<Mailbox>().map_err(|e| format!("`{a}`: {e}"));
    let mut message = Message::builder()
        .from(mailbox(notifier.from.as_deref().unwrap_or_default())?)
        .subject(format!(
            "dropsync: {} {}",
            event.integration,
            event.kind.as_str().replace('_', " ")
        ))
        .message_id(Some(format!("<{}@dropsync>", event.id)))
        .header(ContentType::TEXT_PLAIN);
    for to in &notifier.to {
        message = message.to(mailbox(to)?);
    }
    let body = format!(
        "{}\n\nintegration: {}\nevent: {}\nrun: {}\nat: {}\nevent id: {}\n",
        event.text(),
        event.integration,
        event.kind,
        event.execution_id.as_deref().unwrap_or("-"),
        event.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        event.id
    );
    let message = message.body(body).map_err(|e| e.to_string())?;

    let tls = || -> Result<TlsParameters, String> {
        let mut params = TlsParameters::builder(host.to_string());
        if let Some(path) = &notifier.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            let ca = Certificate::from_pem(&pem)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            params = params.add_root_certificate(ca);
        }
        params.build_rustls().map_err(|e| e.to_string())
    };
    let (tls, port) = match notifier.tls {
        SmtpTls::Starttls => (Tls::Required(tls()?), 587),
        SmtpTls::Wrapper => (Tls::Wrapper(tls()?), 465),
        SmtpTls::None => (Tls::None, 25),
    };
    let port = notifier.smtp_port.unwrap_or(port);
    let mut transport = SmtpTransport::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(notifier.timeout()));
    if let Some(user) = &notifier.username {
        let password = secret(
            notifier.password_env.as_deref(),
            notifier.password_file.as_ref(),
            "SMTP password",
        )?
        .unwrap_or_default();
        transport = transport.credentials(Credentials::new(user.clone(), password));
    }
    transport
        .build()
        .send(&message)
        .map(drop)
        .map_err(|e| format!("smtp://{host}:{port}: {e}"))
}
