//! A Mosquitto of the run's own: a free loopback port, persistence in the
//! run's directory, Nagle off, and a queue deep enough that nothing queued
//! for the daemon's offline session is dropped. It can be stopped gracefully
//! (Mosquitto saves its sessions and queued messages on the way out),
//! crashed (SIGKILL: whatever changed since the last save is gone), and
//! started again on the same port with the same state directory.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::daemon::{signal, wait_exit};

/// How long a stopping broker may take to save and exit.
const BROKER_STOP_MS_MAX: u64 = 10_000;
/// How long a starting broker may take to listen.
const BROKER_START_MS_MAX: u64 = 10_000;

#[derive(Debug)]
pub struct Broker {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Writes `mosquitto.conf` into `dir` and starts the broker.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let conf = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             # Both ends turn Nagle off, or a round trip waits ~40 ms.\n\
             set_tcp_nodelay true\n\
             # Sessions and their queued messages survive a restart.\n\
             persistence true\n\
             persistence_location {dir}/\n\
             # Never drop what is queued for an offline session (default 1000).\n\
             max_queued_messages 1000000\n\
             max_inflight_messages 0\n\
             # Started as root, Mosquitto would switch to the `mosquitto` user,\n\
             # who cannot write this directory; as anyone else this does nothing.\n\
             user root\n\
             log_dest file {dir}/mosquitto.log\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n\
             log_timestamp_format %Y-%m-%dT%H:%M:%S\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).context("writing mosquitto.conf")?;
        let mut broker = Self {
            port,
            dir: dir.to_owned(),
            child: None,
        };
        broker.start_again()?;
        Ok(broker)
    }

    /// `host:port` for clients and the daemon's config.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again) and returns when it accepts connections.
    pub fn start_again(&mut self) -> anyhow::Result<Instant> {
        anyhow::ensure!(self.child.is_none(), "the broker is running already");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto (is it installed?)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_millis(BROKER_START_MS_MAX);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(Instant::now());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                anyhow::bail!(
                    "mosquitto exited at start ({status}); see {}",
                    self.dir.join("mosquitto.log").display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "mosquitto did not listen on port {} in time",
                self.port
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, and wait: Mosquitto writes its persistence file on the way
    /// out, so sessions and queued messages come back with it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(&child, "TERM")?;
        if wait_exit(&mut child, Duration::from_millis(BROKER_STOP_MS_MAX))?.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("mosquitto did not stop within {BROKER_STOP_MS_MAX} ms of SIGTERM");
        }
        Ok(())
    }

    /// SIGKILL: what the broker acknowledged since its last save is lost
    /// (clients that retry with the same id recover it).
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.crash();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}
