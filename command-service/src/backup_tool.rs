//! `command-service backup` and `command-service restore`: the operator's
//! side of `CommandAdminService.Backup`. Each returns the line to print, or
//! the one-line reason it failed.

use std::path::Path;

use shared::proto as pb;
use shared::proto::command_admin_service_client::CommandAdminServiceClient;
use shared::server::auth;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

use crate::backup_file::{BackupReader, BackupWriter, Header};
use crate::config::{BackupArgs, RestoreArgs};
use crate::store::{reads_format, EntryCounts, Store, EARLIER_FORMAT, FORMAT};

/// The sled cache a restore writes with.
const RESTORE_CACHE_BYTES: u64 = 64 * 1024 * 1024;

fn describe(counts: &EntryCounts) -> String {
    format!(
        "{} entries: {} orders, {} log blocks, {} idempotency keys, {} history entries",
        counts.total(),
        counts.orders,
        counts.log_blocks,
        counts.commands,
        counts.history
    )
}

/// The error and its causes on one line (tonic's transport errors say
/// little at the top level).
fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Calls `Backup` on `args.endpoint` and writes the file `args.to`.
pub async fn backup(args: &BackupArgs) -> Result<String, String> {
    let token = auth::resolve(args.token.as_ref(), args.token_file.as_deref(), "token")?;
    let uri = if args.endpoint.contains("://") {
        args.endpoint.clone()
    } else {
        format!("http://{}", args.endpoint)
    };
    let https = uri.starts_with("https://");
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| format!("--endpoint {}: {e}", args.endpoint))?
        .connect_timeout(std::time::Duration::from_secs(10));
    match (&args.ca_file, https) {
        (Some(ca), true) => {
            let tls = shared::server::tls::client_config(ca, args.tls_domain.as_deref())?;
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("TLS configuration: {}", chain(&e)))?;
        }
        (None, true) => return Err("an https:// --endpoint needs --ca-file".into()),
        (Some(_), false) => return Err("--ca-file needs an https:// --endpoint".into()),
        (None, false) => {}
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach command-service at {uri}: {}", chain(&e)))?;
    let mut client = CommandAdminServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut request = tonic::Request::new(pb::BackupRequest {});
    if let Some(token) = &token {
        let value = MetadataValue::try_from(format!("Bearer {}", token.expose()))
            .map_err(|_| "the token is not valid metadata".to_owned())?;
        request.metadata_mut().insert("authorization", value);
    }
    let refused =
        |status: tonic::Status| format!("backup failed: {:?}: {}", status.code(), status.message());
    let mut stream = client.backup(request).await.map_err(refused)?.into_inner();
    use pb::backup_response::Kind;
    let header = match stream
        .message()
        .await
        .map_err(refused)?
        .and_then(|m| m.kind)
    {
        Some(Kind::Header(header)) => header,
        _ => return Err("backup failed: the stream did not start with a header".into()),
    };
    if !reads_format(header.store_format) {
        return Err(format!(
            "backup failed: the service stores format {}, this command-service reads formats {EARLIER_FORMAT} and {FORMAT}",
            header.store_format
        ));
    }
    let mut file = BackupWriter::create(
        &args.to,
        Header {
            store_format: header.store_format,
            log_id: header.log_id.clone(),
            position: header.position,
            counts: EntryCounts::default(),
        },
    )
    .map_err(|e| format!("cannot write the backup: {e}"))?;
    let trailer = loop {
        match stream
            .message()
            .await
            .map_err(refused)?
            .and_then(|m| m.kind)
        {
            Some(Kind::Chunk(chunk)) => {
                for entry in chunk.entries {
                    if !file
                        .push(&entry.key, &entry.value)
                        .map_err(|e| format!("cannot write the backup: {e}"))?
                    {
                        return Err("backup failed: an entry of no known kind".into());
                    }
                }
            }
            Some(Kind::Trailer(trailer)) => break trailer,
            Some(Kind::Header(_)) | None => {
                return Err("backup failed: the stream ended without its trailer".into())
            }
        }
    };
    let got = file.counts();
    let sent = EntryCounts {
        orders: trailer.orders,
        log_blocks: trailer.log_blocks,
        commands: trailer.commands,
        history: trailer.history,
    };
    if got != sent || got.total() != trailer.entries {
        return Err(format!(
            "backup failed: received {} but the service sent {}",
            describe(&got),
            describe(&sent)
        ));
    }
    let (written, bytes) = file
        .finish()
        .map_err(|e| format!("cannot write the backup: {e}"))?;
    Ok(format!(
        "backup of log {} at position {} written to {} ({bytes} bytes, {})",
        written.log_id,
        written.position,
        args.to.display(),
        describe(&written.counts)
    ))
}

/// Whether `dir` is missing or an empty directory.
fn is_new(dir: &Path) -> Result<bool, String> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(format!("--data-dir {}: {e}", dir.display())),
    }
}

/// Checks the whole file `args.from`, then writes the store it holds into
/// the new directory `args.data_dir`.
pub fn restore(args: &RestoreArgs) -> Result<String, String> {
    let dir = &args.data_dir;
    if !is_new(dir)? {
        return Err(format!(
            "--data-dir {} is not empty: restore only into a new or empty directory",
            dir.display()
        ));
    }
    // The first pass checks every checksum before anything is created.
    let mut reader = BackupReader::open(&args.from).map_err(|e| e.to_string())?;
    let header = reader.header.clone();
    if !reads_format(header.store_format) {
        return Err(format!(
            "{} holds store format {}, this command-service restores formats {EARLIER_FORMAT} and {FORMAT}",
            args.from.display(),
            header.store_format
        ));
    }
    while reader.next_entry().map_err(|e| e.to_string())?.is_some() {}

    std::fs::create_dir_all(dir).map_err(|e| format!("--data-dir {}: {e}", dir.display()))?;
    let restoring = Store::restore_into(dir, RESTORE_CACHE_BYTES, &header.log_id, header.position)
        .map_err(|e| e.to_string())?;
    let mut reader = BackupReader::open(&args.from).map_err(|e| e.to_string())?;
    while let Some((key, value)) = reader.next_entry().map_err(|e| e.to_string())? {
        restoring
            .insert(&key, &value)
            .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
    }
    let store = restoring.finish().map_err(|e| e.to_string())?;
    drop(store);
    Ok(format!(
        "restored log {} at position {} into {} ({}); the next event gets position {}",
        header.log_id,
        header.position,
        dir.display(),
        describe(&header.counts),
        header.position + 1
    ))
}
