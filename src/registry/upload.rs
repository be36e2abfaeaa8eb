//! Blob uploads and the manifest. A layer is streamed: its writer runs on the calling thread
//! and feeds a bounded channel that the body of one chunked `PATCH` (sent from a second thread)
//! reads from, so at most a few chunks of it are in memory. The upload is completed by
//! `PUT ?digest=` only after the writer has finished and named the digest, so a layer whose
//! bytes went wrong is never committed (the registry also checks the digest itself).

use std::io::{self, Read, Seek, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use anyhow::{anyhow, Context};
use indicatif::ProgressBar;
use ureq::SendBody;

use super::{check, network_error, read_error_body, with_auth, Client};
use crate::output::errln;

/// The size of the pieces handed from the writer to the uploading thread.
const CHUNK: usize = 256 << 10;
/// How many pieces may wait in the channel.
const IN_FLIGHT: usize = 4;

/// Statuses with which a registry may turn down a chunked `PATCH` it does not support; the
/// upload is then retried as one `PUT` with a Content-Length.
const CHUNKED_REFUSED: &[u16] = &[400, 411, 413, 415, 416, 501];

impl Client {
    /// Whether the registry has the blob (`HEAD /v2/REPO/blobs/DIGEST`).
    pub fn blob_exists(&mut self, digest: &str) -> anyhow::Result<bool> {
        let url = self.url(&format!("blobs/{digest}"));
        let resp = self.send("HEAD", &url, |agent, auth| {
            with_auth(agent.head(&url), auth).call()
        })?;
        let resp = check(resp, "HEAD", &url, &[200, 404])?;
        Ok(resp.status().as_u16() == 200)
    }

    /// `POST /v2/REPO/blobs/uploads/`: a new upload session's absolute URL.
    fn start_upload(&mut self) -> anyhow::Result<String> {
        let url = self.url("blobs/uploads/");
        let resp = self.send("POST", &url, |agent, auth| {
            with_auth(agent.post(&url), auth).send_empty()
        })?;
        let resp = check(resp, "POST", &url, &[202])?;
        let location = location_of(&resp)
            .ok_or_else(|| anyhow!("POST {url}: the registry's 202 has no Location"))?;
        Ok(self.absolute(&location))
    }

    /// `PUT LOCATION?digest=D` with `body` (empty when the bytes went up in a PATCH).
    fn finish_upload(&mut self, location: &str, digest: &str, body: Payload) -> anyhow::Result<()> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={}", digest.replace(':', "%3A"));
        let resp = self.send("PUT", &url, |agent, auth| {
            let req =
                with_auth(agent.put(&url), auth).header("Content-Type", "application/octet-stream");
            match body {
                Payload::Empty => req.send_empty(),
                Payload::Bytes(b) => req.send(b),
                Payload::File(f) => {
                    // ureq sends a File with its length (Content-Length), not chunked.
                    let mut f = f.try_clone().map_err(ureq::Error::Io)?;
                    f.rewind().map_err(ureq::Error::Io)?;
                    req.send(f)
                }
            }
        })?;
        check(resp, "PUT", &url, &[201, 204]).map(drop)
    }

    /// Upload a small blob in one request (POST, then PUT with the bytes), unless the
    /// registry has it. Returns whether it was uploaded.
    pub fn put_small_blob(&mut self, digest: &str, bytes: &[u8]) -> anyhow::Result<bool> {
        if self.blob_exists(digest)? {
            return Ok(false);
        }
        let location = self.start_upload()?;
        self.finish_upload(&location, digest, Payload::Bytes(bytes))?;
        Ok(true)
    }

    /// Upload a blob that `produce` writes, returning what it returned. `digest` names the
    /// digest of what was written, known only once `produce` is done. `produce` runs once, or
    /// twice when the registry refuses a chunked upload (then into a temporary file).
    pub fn put_blob_streaming<T>(
        &mut self,
        mut produce: impl FnMut(&mut dyn Write) -> anyhow::Result<T>,
        digest: impl Fn(&T) -> String,
        progress: &ProgressBar,
    ) -> anyhow::Result<T> {
        let location = self.start_upload()?;
        let (tx, rx) = sync_channel(IN_FLIGHT);
        let agent = self.agent.clone();
        let auth = self.auth_for(&location).map(str::to_string);
        let url = location.clone();
        let http = std::thread::spawn(move || -> Result<_, ureq::Error> {
            let mut resp = with_auth(agent.patch(&url), auth.as_deref())
                .header("Content-Type", "application/octet-stream")
                .send(SendBody::from_owned_reader(PipeReader::new(rx)))?;
            let status = resp.status().as_u16();
            let location = location_of(&resp);
            let body = if status == 202 {
                Vec::new()
            } else {
                read_error_body(&mut resp)
            };
            Ok((status, location, body))
        });
        let mut pipe = PipeWriter::new(tx, progress.clone());
        let produced = produce(&mut pipe).and_then(|t| {
            pipe.finish()?;
            Ok(t)
        });
        let closed = pipe.closed;
        drop(pipe);
        let answer = http.join().expect("the upload thread panicked");
        let (status, next, body) = match (produced.as_ref(), answer) {
            // The writer failed on its own: its error is the story (the upload was aborted).
            (Err(_), _) if !closed => return produced,
            (_, Err(e)) => return Err(network_error(e, &location)),
            (_, Ok(answer)) => answer,
        };
        if CHUNKED_REFUSED.contains(&status) {
            let why = super::describe_status(status, &body);
            errln!(
                "cellar: the registry refused a chunked upload ({why}); uploading from a \
                 temporary file instead"
            );
            let _ = with_auth(self.agent.delete(&location), self.auth_for(&location)).call();
            progress.set_position(0);
            return self.put_blob_spooled(produce, digest, progress);
        }
        if status != 202 {
            return Err(anyhow!(
                "PATCH {}: {}",
                super::shown_url(&location),
                super::describe_status(status, &body)
            ));
        }
        let t = produced?;
        let next = next.map_or(location, |l| self.absolute(&l));
        self.finish_upload(&next, &digest(&t), Payload::Empty)?;
        Ok(t)
    }

    /// The fallback for registries without chunked uploads: write the blob to a temporary
    /// file, then send it in one `PUT` with its length.
    fn put_blob_spooled<T>(
        &mut self,
        mut produce: impl FnMut(&mut dyn Write) -> anyhow::Result<T>,
        digest: impl Fn(&T) -> String,
        progress: &ProgressBar,
    ) -> anyhow::Result<T> {
        let mut file = tempfile::tempfile().context("creating a temporary file for a layer")?;
        let t = {
            let mut out = io::BufWriter::with_capacity(1 << 20, &mut file);
            let t = produce(&mut out)?;
            out.flush().context("writing a layer to a temporary file")?;
            t
        };
        progress.set_position(file.metadata().map_or(0, |m| m.len()));
        let location = self.start_upload()?;
        self.finish_upload(&location, &digest(&t), Payload::File(&file))?;
        Ok(t)
    }

    /// `PUT /v2/REPO/manifests/TAG`. Returns the registry's `Docker-Content-Digest`, if given.
    pub fn put_manifest(
        &mut self,
        media_type: &str,
        manifest: &[u8],
    ) -> anyhow::Result<Option<String>> {
        let url = self.url(&format!("manifests/{}", self.reference.tag));
        let resp = self.send("PUT", &url, |agent, auth| {
            with_auth(agent.put(&url), auth)
                .header("Content-Type", media_type)
                .send(manifest)
        })?;
        let resp = check(resp, "PUT", &url, &[201])?;
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }
}

/// What the `PUT` that completes an upload carries.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    File(&'a std::fs::File),
}

fn location_of(resp: &ureq::http::Response<ureq::Body>) -> Option<String> {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
}

/// The writing end: pieces of [`CHUNK`] bytes into a bounded channel. `None` marks the end; a
/// writer dropped without [`PipeWriter::finish`] leaves the reader with an error, which aborts
/// the request rather than completing it short.
struct PipeWriter {
    tx: Option<SyncSender<Option<Vec<u8>>>>,
    buf: Vec<u8>,
    progress: ProgressBar,
    /// The reading side went away (the request failed): the HTTP error is the story.
    closed: bool,
}

impl PipeWriter {
    fn new(tx: SyncSender<Option<Vec<u8>>>, progress: ProgressBar) -> PipeWriter {
        PipeWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
            progress,
            closed: false,
        }
    }

    fn send(&mut self, msg: Option<Vec<u8>>) -> io::Result<()> {
        let tx = self.tx.as_ref().expect("not finished");
        if tx.send(msg).is_err() {
            self.closed = true;
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the upload to the registry stopped",
            ));
        }
        Ok(())
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let n = piece.len() as u64;
        self.send(Some(piece))?;
        self.progress.inc(n);
        Ok(())
    }

    /// Send what is buffered and the end mark.
    fn finish(&mut self) -> io::Result<()> {
        self.send_buf()?;
        self.send(None)?;
        self.tx = None;
        Ok(())
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Pieces go when full or at the end; a flush mid-stream need not cut a small one.
        Ok(())
    }
}

struct PipeReader {
    rx: Receiver<Option<Vec<u8>>>,
    piece: Vec<u8>,
    pos: usize,
    done: bool,
}

impl PipeReader {
    fn new(rx: Receiver<Option<Vec<u8>>>) -> PipeReader {
        PipeReader {
            rx,
            piece: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.piece.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Some(piece)) => {
                    self.piece = piece;
                    self.pos = 0;
                }
                Ok(None) => self.done = true,
                Err(_) => {
                    return Err(io::Error::other(
                        "the layer could not be written; upload abandoned",
                    ))
                }
            }
        }
        let n = buf.len().min(self.piece.len() - self.pos);
        buf[..n].copy_from_slice(&self.piece[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_carries_bytes_and_reports_aborts() {
        let data: Vec<u8> = (0..CHUNK * 3 + 17).map(|i| (i * 7) as u8).collect();
        let (tx, rx) = sync_channel(IN_FLIGHT);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            PipeReader::new(rx).read_to_end(&mut got).map(|_| got)
        });
        let mut w = PipeWriter::new(tx, ProgressBar::hidden());
        for piece in data.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), data);

        let (tx, rx) = sync_channel(IN_FLIGHT);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            PipeReader::new(rx).read_to_end(&mut got).map(|_| got)
        });
        let mut w = PipeWriter::new(tx, ProgressBar::hidden());
        w.write_all(&data).unwrap();
        drop(w);
        assert!(
            reader.join().unwrap().is_err(),
            "an abort reads as an error"
        );
    }
}
