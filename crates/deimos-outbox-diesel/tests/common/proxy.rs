//! A TCP proxy in front of a database server, for fault tests: a restart, a stalled connection, a black hole.
//! Shared by the outbox's and the record consumers' tests (included with `#[path]`).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

/// The server's `host:port` of a `scheme://user@host:port/db` URL, and the URL with it replaced by `via` (a
/// proxy's `host:port`). MySQL URLs get `prefer_socket=false`: the MySQL client otherwise moves a connection to
/// 127.0.0.1 over to the server's Unix socket, around the proxy.
pub fn server_and_url_via(url: &str, via: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, rest) = rest.split_once('@').unwrap();
    let (server, path) = rest.split_once('/').unwrap();
    let tcp_only = if scheme == "mysql" { "?prefer_socket=false" } else { "" };
    (server.to_string(), format!("{scheme}://{user}@{via}/{path}{tcp_only}"))
}

/// A TCP proxy in front of a database server, without touching the server the other tests share.
///
/// - [`restart`](Proxy::restart) closes every connection through it and refuses new ones for a while, which is
///   what a database restart looks like to a client.
/// - [`stall`](Proxy::stall) stops forwarding on every connection open now, without closing them: what a client
///   sees when the network drops its packets (a firewall or NAT forgetting the flow). Later connections work.
/// - [`black_hole`](Proxy::black_hole) does that and also stalls every later connection: they are accepted, but
///   nothing reaches the server (no answer, no refusal) until [`heal`](Proxy::heal).
pub struct Proxy {
    pub port: u16,
    up: Arc<tokio::sync::watch::Sender<bool>>,
    /// Bumped by `stall`: a connection opened before the bump stops forwarding.
    stalls: Arc<tokio::sync::watch::Sender<u64>>,
    hole: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, _) = tokio::sync::watch::channel(true);
        let up = Arc::new(up);
        let stalls = Arc::new(tokio::sync::watch::channel(0u64).0);
        let hole = Arc::new(tokio::sync::watch::channel(false).0);
        let (target, state, stall_state, hole_state) = (target.to_string(), up.clone(), stalls.clone(), hole.clone());
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let Some(l) = listener.as_ref() else {
                    // Down: nothing listens (connections are refused) until it comes back up.
                    let mut rx = state.subscribe();
                    let _ = rx.wait_for(|up| *up).await;
                    listener = Some(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap());
                    continue;
                };
                let mut rx = state.subscribe();
                tokio::select! {
                    accepted = l.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        let target = target.clone();
                        let mut down = state.subscribe();
                        let mut stalled = stall_state.subscribe();
                        let opened = *stalled.borrow_and_update();
                        let mut hole = hole_state.subscribe();
                        tokio::spawn(async move {
                            // Black hole: hold the connection, forward nothing, until healed or restarted.
                            tokio::select! {
                                _ = hole.wait_for(|h| !*h) => {}
                                _ = down.wait_for(|up| !*up) => return,
                            }
                            let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else { return };
                            let stall = tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                                _ = down.wait_for(|up| !*up) => false,
                                _ = stalled.wait_for(|n| *n > opened) => true,
                            };
                            if stall {
                                // Stalled: both sockets stay open, nothing moves, until a restart.
                                let _ = down.wait_for(|up| !*up).await.is_ok();
                            }
                            drop((client, server));
                        });
                    }
                    _ = rx.wait_for(|up| !*up) => listener = None,
                }
            }
        });
        Proxy { port, up, stalls, hole }
    }

    /// Closes every connection and refuses new ones for `down`, then accepts again.
    pub async fn restart(&self, down: Duration) {
        self.up.send_replace(false);
        tokio::time::sleep(down).await;
        self.up.send_replace(true);
    }

    /// Stops forwarding on every connection open now, without closing it; later connections work.
    pub fn stall(&self) {
        self.stalls.send_modify(|n| *n += 1);
    }

    /// Stalls every connection, open now or later, until [`heal`](Self::heal).
    pub fn black_hole(&self) {
        self.hole.send_replace(true);
        self.stall();
    }

    /// Ends a black hole: later connections work again (stalled ones stay stalled).
    pub fn heal(&self) {
        self.hole.send_replace(false);
    }

    /// A proxy in front of the server of `url` (a PostgreSQL or MySQL URL), and `url` through it.
    pub async fn in_front_of(url: &str) -> (Proxy, String) {
        let (server, _) = server_and_url_via(url, "");
        let proxy = Proxy::start(&server).await;
        let through = server_and_url_via(url, &format!("127.0.0.1:{}", proxy.port)).1;
        (proxy, through)
    }

    /// `url` (of the server this proxy is in front of) through this proxy.
    pub fn url(&self, url: &str) -> String {
        server_and_url_via(url, &format!("127.0.0.1:{}", self.port)).1
    }
}
