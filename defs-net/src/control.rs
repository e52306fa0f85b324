//! The control socket: a Unix socket in the data dir (mode 0600) through which the `defs` CLI
//! drives the running node of that dir instead of starting its own.
//!
//! Protocol: each message is `u32 LE length ‖ body`, bodies at most [`MAX_CONTROL_FRAME`].
//! The client sends one [`ControlRequest`]; the server answers with any number of
//! [`ControlReply::Progress`] frames and then exactly one `Done` or `Failed`, and closes.
//!
//! ```text
//!   defs (CLI) ──ControlRequest──► ControlServer (accept loop) ──spawn per connection──► Handler
//!              ◄──Progress*, Done|Failed──────────────────────────────────────────────┘
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::{Error, Result};

/// File name of the control socket in the data dir.
pub const SOCKET_NAME: &str = "control.sock";

/// Largest control frame, in bytes: paths and rendered reports, never file contents.
pub const MAX_CONTROL_FRAME: u32 = 4 << 20;

/// Control connections served at once.
pub const MAX_CONTROL_CONNECTIONS: usize = 16;

/// Progress frames buffered per connection; older ones are dropped when the CLI reads slowly.
const PROGRESS_QUEUE: usize = 16;

/// What the CLI asks the running node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// Print the node's ids.
    Id,
    /// Node status, as text or JSON.
    Status {
        /// JSON output.
        json: bool,
    },
    /// Known peers, as text or JSON.
    Peers {
        /// JSON output.
        json: bool,
    },
    /// Store a file (an absolute path on this machine).
    Put {
        /// The file.
        path: String,
        /// Layout mode (`auto`, `file`, `slice`, `rs-size`, `rs-ratio`).
        mode: String,
        /// `K+M` when given.
        rs: Option<(u8, u8)>,
    },
    /// Fetch a file into `out` (an absolute path).
    Get {
        /// The file id (hex).
        file_id: String,
        /// Where to write it.
        out: String,
        /// Replace `out` when it exists (else the get fails and leaves it as it is).
        force: bool,
    },
    /// Wait until everything written under `path` (an absolute path inside the mount; the
    /// mountpoint when `None`) is uploaded. Only a mount (`defs-mount`) serves it.
    Sync {
        /// The path.
        path: Option<String>,
    },
    /// Check the owner's files and repair what lost holders (`defs repair`): the objects named
    /// (file ids, hex), or every file of the mount when empty.
    Repair {
        /// File ids; empty = every stored file of the mount.
        files: Vec<String>,
    },
    /// Audit every shard of the mount's files on each of its holders now, and say what was
    /// found. Only a mount (`defs-mount`) serves it.
    Audit,
    /// Publish the namespace, then delete the objects no kept version names now (`defs gc`).
    /// Only a writable mount serves it.
    Gc,
}

/// Most file ids one `defs repair` request names.
pub const MAX_REPAIR_IDS: usize = 100_000;

/// What the node answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlReply {
    /// Bytes done of total so far.
    Progress {
        /// Bytes done.
        done: u64,
        /// Bytes in total.
        total: u64,
    },
    /// Success, with the text to print on stdout.
    Done(String),
    /// Failure, with the message.
    Failed(String),
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let n = u32::try_from(s.len())
        .ok()
        .filter(|n| *n < MAX_CONTROL_FRAME)
        .ok_or(Error::TooLarge {
            what: "control string",
            size: s.len() as u64,
            limit: u64::from(MAX_CONTROL_FRAME),
        })?;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Rd<'a>(&'a [u8]);

impl Rd<'_> {
    fn bad() -> Error {
        Error::Malformed {
            what: "control message",
            reason: "truncated or invalid".into(),
        }
    }
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(Self::bad());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self) -> Result<String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        let n = u32::from_le_bytes(a) as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| Self::bad())
    }
    fn end(&self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Self::bad())
        }
    }
}

impl ControlRequest {
    /// Encodes the request body.
    ///
    /// # Errors
    /// [`Error::TooLarge`] for absurd paths.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut b = Vec::new();
        match self {
            ControlRequest::Id => b.push(1),
            ControlRequest::Status { json } => {
                b.push(2);
                b.push(u8::from(*json));
            }
            ControlRequest::Peers { json } => {
                b.push(3);
                b.push(u8::from(*json));
            }
            ControlRequest::Put { path, mode, rs } => {
                b.push(4);
                put_str(&mut b, path)?;
                put_str(&mut b, mode)?;
                match rs {
                    None => b.push(0),
                    Some((k, m)) => b.extend_from_slice(&[1, *k, *m]),
                }
            }
            ControlRequest::Get {
                file_id,
                out,
                force,
            } => {
                b.push(5);
                put_str(&mut b, file_id)?;
                put_str(&mut b, out)?;
                b.push(u8::from(*force));
            }
            ControlRequest::Repair { files } => {
                b.push(7);
                if files.len() > MAX_REPAIR_IDS {
                    return Err(Error::TooLarge {
                        what: "file ids of a repair",
                        size: files.len() as u64,
                        limit: MAX_REPAIR_IDS as u64,
                    });
                }
                b.extend_from_slice(&(files.len() as u32).to_le_bytes());
                for f in files {
                    put_str(&mut b, f)?;
                }
            }
            ControlRequest::Sync { path } => {
                b.push(6);
                match path {
                    None => b.push(0),
                    Some(p) => {
                        b.push(1);
                        put_str(&mut b, p)?;
                    }
                }
            }
            ControlRequest::Audit => b.push(20),
            ControlRequest::Gc => b.push(21),
        }
        Ok(b)
    }

    /// Decodes a request body.
    ///
    /// # Errors
    /// [`Error::Malformed`].
    pub fn decode(body: &[u8]) -> Result<Self> {
        let mut r = Rd(body);
        let req = match r.u8()? {
            1 => ControlRequest::Id,
            2 => ControlRequest::Status { json: r.u8()? != 0 },
            3 => ControlRequest::Peers { json: r.u8()? != 0 },
            4 => {
                let path = r.string()?;
                let mode = r.string()?;
                let rs = match r.u8()? {
                    0 => None,
                    _ => Some((r.u8()?, r.u8()?)),
                };
                ControlRequest::Put { path, mode, rs }
            }
            5 => ControlRequest::Get {
                file_id: r.string()?,
                out: r.string()?,
                force: r.u8()? != 0,
            },
            6 => ControlRequest::Sync {
                path: match r.u8()? {
                    0 => None,
                    1 => Some(r.string()?),
                    _ => return Err(Rd::bad()),
                },
            },
            7 => {
                let mut n = [0u8; 4];
                n.copy_from_slice(r.take(4)?);
                let n = u32::from_le_bytes(n) as usize;
                // Every id takes at least its 4-byte length: bounded by the bytes present.
                if n > MAX_REPAIR_IDS || n > r.0.len() / 4 {
                    return Err(Rd::bad());
                }
                let mut files = Vec::with_capacity(n);
                for _ in 0..n {
                    files.push(r.string()?);
                }
                ControlRequest::Repair { files }
            }
            20 => ControlRequest::Audit,
            21 => ControlRequest::Gc,
            _ => return Err(Rd::bad()),
        };
        r.end()?;
        Ok(req)
    }
}

impl ControlReply {
    /// Encodes the reply body.
    ///
    /// # Errors
    /// [`Error::TooLarge`].
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut b = Vec::new();
        match self {
            ControlReply::Progress { done, total } => {
                b.push(1);
                b.extend_from_slice(&done.to_le_bytes());
                b.extend_from_slice(&total.to_le_bytes());
            }
            ControlReply::Done(s) => {
                b.push(2);
                put_str(&mut b, s)?;
            }
            ControlReply::Failed(s) => {
                b.push(3);
                put_str(&mut b, s)?;
            }
        }
        Ok(b)
    }

    /// Decodes a reply body.
    ///
    /// # Errors
    /// [`Error::Malformed`].
    pub fn decode(body: &[u8]) -> Result<Self> {
        let mut r = Rd(body);
        let rep = match r.u8()? {
            1 => ControlReply::Progress {
                done: r.u64()?,
                total: r.u64()?,
            },
            2 => ControlReply::Done(r.string()?),
            3 => ControlReply::Failed(r.string()?),
            _ => return Err(Rd::bad()),
        };
        r.end()?;
        Ok(rep)
    }
}

async fn read_frame(s: &mut UnixStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_CONTROL_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("control frame of {len} bytes exceeds {MAX_CONTROL_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await?;
    Ok(Some(body))
}

async fn write_frame(s: &mut UnixStream, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut f = Vec::with_capacity(4 + body.len());
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(body);
    s.write_all(&f).await
}

/// Sends progress frames to the CLI while a request runs.
#[derive(Clone, Debug)]
pub struct ProgressSink(mpsc::Sender<(u64, u64)>);

impl ProgressSink {
    /// Reports progress; dropped if the CLI is behind.
    pub fn report(&self, done: u64, total: u64) {
        let _ = self.0.try_send((done, total));
    }
}

/// What serves control requests (implemented by the CLI's wiring over a [`crate::Client`]).
pub trait Handler: Send + Sync + 'static {
    /// Handles one request; `Ok(text)` is printed by the CLI, `Err(message)` is its error.
    fn handle(
        &self,
        req: ControlRequest,
        progress: ProgressSink,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<String, String>> + Send + '_>>;
}

/// The control socket server. Dropping it does not stop it; cancel its token.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Binds `DIR/control.sock` (mode 0600; a stale socket from a dead node is replaced) and
    /// serves until `cancel` fires.
    ///
    /// # Errors
    /// [`Error::Io`] when the socket cannot be bound, [`Error::Control`] when a live node
    /// already serves this dir.
    pub async fn bind(
        dir: &Path,
        handler: Arc<dyn Handler>,
        cancel: CancellationToken,
    ) -> Result<ControlServer> {
        let path = dir.join(SOCKET_NAME);
        if path.exists() {
            if UnixStream::connect(&path).await.is_ok() {
                return Err(Error::Control(format!(
                    "a node is already running for {} (its control socket answers)",
                    dir.display()
                )));
            }
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        // Create with a private umask so there is no moment the socket is world-accessible.
        let listener = bind_private(&path)?;
        let p2 = path.clone();
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS));
            loop {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    conn = listener.accept() => match conn {
                        Ok((stream, _)) => {
                            let Ok(permit) = slots.clone().try_acquire_owned() else {
                                warn!("too many control connections; refusing one");
                                continue;
                            };
                            let h = handler.clone();
                            tokio::spawn(async move {
                                if let Err(e) = serve(stream, h).await {
                                    debug!(error = %e, "control connection failed");
                                }
                                drop(permit);
                            });
                        }
                        Err(e) => warn!(error = %e, "control accept failed"),
                    },
                }
            }
            let _ = std::fs::remove_file(&p2);
        });
        Ok(ControlServer { path })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn bind_private(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let listener = UnixListener::bind(path).map_err(|e| Error::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(path, e))?;
    Ok(listener)
}

async fn serve(mut stream: UnixStream, handler: Arc<dyn Handler>) -> Result<()> {
    let io = |e| Error::io(SOCKET_NAME, e);
    let Some(body) = read_frame(&mut stream).await.map_err(io)? else {
        return Ok(());
    };
    let req = match ControlRequest::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            let b = ControlReply::Failed(format!("{e}")).encode()?;
            return write_frame(&mut stream, &b).await.map_err(io);
        }
    };
    let (tx, mut rx) = mpsc::channel(PROGRESS_QUEUE);
    let sink = ProgressSink(tx);
    let work = handler.handle(req, sink);
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            Some((done, total)) = rx.recv() => {
                let b = ControlReply::Progress { done, total }.encode()?;
                write_frame(&mut stream, &b).await.map_err(io)?;
            }
        }
    };
    let reply = match result {
        Ok(s) => ControlReply::Done(s),
        Err(s) => ControlReply::Failed(s),
    };
    write_frame(&mut stream, &reply.encode()?).await.map_err(io)
}

/// Connects to the running node of `dir`, if there is one.
pub async fn connect(dir: &Path) -> Option<UnixStream> {
    UnixStream::connect(dir.join(SOCKET_NAME)).await.ok()
}

/// Sends `req` over `stream`, calling `on_progress` for each progress frame, and returns the
/// final text.
///
/// # Errors
/// [`Error::Control`] with the node's message when it failed; [`Error::Io`] when the
/// connection broke.
pub async fn call(
    mut stream: UnixStream,
    req: &ControlRequest,
    mut on_progress: impl FnMut(u64, u64),
) -> Result<String> {
    let io = |e| Error::io(SOCKET_NAME, e);
    write_frame(&mut stream, &req.encode()?).await.map_err(io)?;
    loop {
        let Some(body) = read_frame(&mut stream).await.map_err(io)? else {
            return Err(Error::Control(
                "the running node closed the control connection without an answer (did it \
                 stop?)"
                    .into(),
            ));
        };
        match ControlReply::decode(&body)? {
            ControlReply::Progress { done, total } => on_progress(done, total),
            ControlReply::Done(s) => return Ok(s),
            ControlReply::Failed(s) => return Err(Error::Control(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Handler for Echo {
        fn handle(
            &self,
            req: ControlRequest,
            progress: ProgressSink,
        ) -> Pin<Box<dyn Future<Output = std::result::Result<String, String>> + Send + '_>>
        {
            Box::pin(async move {
                progress.report(1, 2);
                match req {
                    ControlRequest::Get { file_id, .. } => Err(format!("no file {file_id}")),
                    other => Ok(format!("{other:?}")),
                }
            })
        }
    }

    #[tokio::test]
    async fn requests_round_trip_over_a_private_socket() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let server = ControlServer::bind(dir.path(), Arc::new(Echo), cancel.clone())
            .await
            .unwrap();
        let mode = std::fs::metadata(server.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let req = ControlRequest::Put {
            path: "/x".into(),
            mode: "auto".into(),
            rs: Some((3, 2)),
        };
        let mut seen = Vec::new();
        let s = connect(dir.path()).await.unwrap();
        let out = call(s, &req, |d, t| seen.push((d, t))).await.unwrap();
        assert!(out.contains("Put"));
        let s = connect(dir.path()).await.unwrap();
        let err = call(
            s,
            &ControlRequest::Get {
                file_id: "ab".into(),
                out: "/o".into(),
                force: false,
            },
            |_, _| {},
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("no file ab"));
        // A second server for the same dir is refused while the first answers.
        assert!(
            ControlServer::bind(dir.path(), Arc::new(Echo), CancellationToken::new())
                .await
                .is_err()
        );
        cancel.cancel();
    }

    #[test]
    fn control_messages_round_trip() {
        for r in [
            ControlRequest::Id,
            ControlRequest::Status { json: true },
            ControlRequest::Peers { json: false },
            ControlRequest::Get {
                file_id: "f".into(),
                out: "o".into(),
                force: true,
            },
            ControlRequest::Sync { path: None },
            ControlRequest::Repair { files: Vec::new() },
            ControlRequest::Repair {
                files: vec!["ab".repeat(32), "cd".repeat(32)],
            },
            ControlRequest::Audit,
            ControlRequest::Gc,
            ControlRequest::Sync {
                path: Some("/mnt/defs/a".into()),
            },
        ] {
            assert_eq!(ControlRequest::decode(&r.encode().unwrap()).unwrap(), r);
        }
        let r = ControlReply::Progress { done: 1, total: 9 };
        assert_eq!(ControlReply::decode(&r.encode().unwrap()).unwrap(), r);
        assert!(ControlRequest::decode(&[4, 255, 255, 255, 255]).is_err());
        assert!(ControlRequest::decode(&[6, 2]).is_err());
    }
}
