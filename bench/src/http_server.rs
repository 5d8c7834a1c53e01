//! A minimal local HTTP/1.1 server for the HTTP burst: answers every request `200 ok`, keeps
//! connections alive, runs on a thread of its own for the rest of the bench.

use std::net::SocketAddr;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";

/// Starts the server; its port.
pub(crate) fn start() -> Result<u16> {
    let std_listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    std_listener.set_nonblocking(true)?;
    let port = std_listener.local_addr()?.port();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = TcpListener::from_std(std_listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream));
            }
        });
    });
    Ok(port)
}

/// Answers each request head (these requests have no body) on one connection.
async fn serve(mut stream: TcpStream) {
    let mut buf = vec![0u8; 8192];
    let mut pending = Vec::new();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            if stream.write_all(RESPONSE).await.is_err() {
                return;
            }
        }
    }
}
