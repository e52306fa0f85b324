//! Bootstrap addresses as the binaries take them: checked before use (a multiaddr that ends in
//! `/p2p/PEER_ID`: without it DeFS cannot know it reached the right node), reported with the
//! reason when they give no usable peer ([`problems`], [`no_peers`]), waited for only until
//! one gives a storage peer or all have ended ([`wait`]), and remembered in
//! `DIR/config.toml` only once they have answered ([`remember_answered`]), so a mistyped
//! address is never kept.

use std::path::Path;
use std::time::Duration;

use defs_net::bootstrap::{Outcome, Report};
use defs_net::{Multiaddr, Node};

use crate::cli::usage;
use crate::{config_file, data_dir};

/// How long a starting node or mount waits at most for its bootstrap dials when none gives it
/// a storage peer ([`wait`]): a refused port or a wrong peer id fails within milliseconds; an
/// address that does not answer at all is reported as "no answer yet" after this and still
/// tried.
pub const REPORT_WAIT: Duration = Duration::from_secs(3);

/// How often the remembering watch looks at bootstrap dials still running.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Whether `addr` ends in `/p2p/PEER_ID`.
fn is_p2p(addr: &Multiaddr) -> bool {
    addr.iter().last().is_some_and(|p| p.tag() == "p2p")
}

/// Parses one address, saying what is wrong with it.
fn parse(addr: &str) -> Result<Multiaddr, String> {
    let parsed: Multiaddr = addr.parse().map_err(|e| {
        format!("{addr:?} is not a multiaddr ({e}); e.g. /ip4/192.0.2.10/tcp/4001/p2p/PEER_ID")
    })?;
    if !is_p2p(&parsed) {
        return Err(format!(
            "{addr} has no /p2p/PEER_ID at its end: DeFS needs the peer id to know it reached \
             the right node (a running node prints its full addresses, and writes them to \
             DIR/addrs)"
        ));
    }
    Ok(parsed)
}

/// The bootstrap addresses to dial: those `given` on the command line (each must parse and
/// end in `/p2p/`, else a usage error), then those of config.toml (one that does not is left
/// out, with a warning naming it). Returns the addresses and the warnings.
///
/// # Errors
/// A usage error naming a bad address given on the command line.
pub fn plan(given: &[String], config: &[String]) -> anyhow::Result<(Vec<Multiaddr>, Vec<String>)> {
    let mut all = Vec::new();
    for a in given {
        let m = parse(a).map_err(|why| usage(format!("bad --bootstrap: {why}")))?;
        if !all.contains(&m) {
            all.push(m);
        }
    }
    let mut warnings = Vec::new();
    for a in config {
        match parse(a) {
            Ok(m) if !all.contains(&m) => all.push(m),
            Ok(_) => {}
            Err(why) => warnings.push(format!(
                "config.toml [node] bootstrap: {why}; left out (remove it from config.toml)"
            )),
        }
    }
    Ok((all, warnings))
}

/// One line per bootstrap address that gives this node no usable peer: the address and why.
pub fn problems(reports: &[Report]) -> Vec<String> {
    reports
        .iter()
        .filter_map(|r| r.problem().map(|p| format!("bootstrap {}: {p}", r.addr)))
        .collect()
}

/// Waits for the bootstrap dials of `node` until `deadline`: ends as soon as a storage peer
/// is connected and identified (the rest of the network is found through it, see
/// [`Node::discover`], while slower dials go on), or once no dial is still running — unless
/// mDNS is on and no storage peer is there yet (mDNS may still find one). Returns what became
/// of each address so far.
///
/// # Errors
/// [`defs_net::Error::Closed`] when the node stopped.
pub async fn wait(
    node: &Node,
    deadline: tokio::time::Instant,
    mdns: bool,
) -> defs_net::Result<Vec<Report>> {
    loop {
        let have = node.wait_for_storage_peers(1, Duration::ZERO).await?;
        let reports = node.bootstrap().await?;
        let dialling = !reports.iter().all(Report::settled);
        if have > 0 || (!dialling && !mdns) || tokio::time::Instant::now() >= deadline {
            return Ok(reports);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The error of a command that needs storage peers and found none: which addresses were
/// tried, why each failed, and what to do.
pub fn no_peers(reports: &[Report], mdns: bool, waited: Duration) -> anyhow::Error {
    let mut msg = String::from("no storage peers are reachable");
    if waited >= Duration::from_secs(1) {
        msg.push_str(&format!(" after {} s", waited.as_secs()));
    }
    if reports.is_empty() {
        msg.push_str(": no bootstrap address is known");
        msg.push_str(if mdns {
            ", and mDNS found no node on the local network"
        } else {
            " and mDNS is off"
        });
        msg.push_str(
            "; give --bootstrap MULTIADDR (a running node's address, ending in /p2p/PEER_ID), \
             or start a storage node (defs node, defs devnet)",
        );
        return anyhow::anyhow!(msg);
    }
    msg.push_str(". Tried:");
    for line in problems(reports) {
        msg.push_str("\n  ");
        msg.push_str(&line);
    }
    if mdns {
        msg.push_str("\n  mDNS found no storage node on the local network");
    }
    anyhow::anyhow!(msg)
}

/// Remembers in `DIR/config.toml` those of the `given` addresses that answered with a peer
/// this node accepts (and only when `DIR` has an identity). Returns them.
///
/// # Errors
/// When config.toml cannot be written.
pub fn remember_answered(
    dir: &Path,
    given: &[String],
    reports: &[Report],
) -> anyhow::Result<Vec<String>> {
    let answered: Vec<String> = given
        .iter()
        .filter(|a| {
            a.parse::<Multiaddr>()
                .is_ok_and(|m| reports.iter().any(|r| r.addr == m && r.answered()))
        })
        .cloned()
        .collect();
    if answered.is_empty() || !dir.join(data_dir::IDENTITY_FILE).exists() {
        return Ok(Vec::new());
    }
    config_file::remember_bootstrap(&dir.join(data_dir::CONFIG_FILE), &answered)?;
    Ok(answered)
}

/// For a long-running node: remembers each of the `given` addresses once it answers, while
/// their dials run (a dial ends by itself: answered, refused, or failed). Ends with them, or
/// when the node stops.
pub async fn watch_and_remember(dir: std::path::PathBuf, node: Node, given: Vec<String>) {
    loop {
        let Ok(reports) = node.bootstrap().await else {
            return;
        };
        match remember_answered(&dir, &given, &reports) {
            Ok(saved) => {
                for a in saved {
                    tracing::info!(addr = %a, "bootstrap peer answered: remembered in config.toml");
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot remember bootstrap peers"),
        }
        let pending = given.iter().any(|a| {
            a.parse::<Multiaddr>().is_ok_and(|m| {
                reports
                    .iter()
                    .any(|r| r.addr == m && matches!(r.outcome, Outcome::Dialling))
            })
        });
        if !pending {
            return;
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_peer(addr: &str) -> String {
        format!("{addr}/p2p/{}", defs_net::PeerId::random())
    }

    #[test]
    fn addresses_without_a_peer_id_are_refused_on_the_command_line_and_skipped_in_config() {
        let e = plan(&["/ip4/127.0.0.1/tcp/1".into()], &[]).unwrap_err();
        assert!(crate::cli::is_usage(&e));
        assert!(
            e.to_string().contains("/ip4/127.0.0.1/tcp/1 has no /p2p/"),
            "{e}"
        );
        assert!(
            plan(&["nonsense".into()], &[])
                .unwrap_err()
                .to_string()
                .contains("not a multiaddr")
        );
        let good = with_peer("/ip4/127.0.0.1/tcp/4001");
        let (all, warnings) = plan(
            std::slice::from_ref(&good),
            &["/ip4/127.0.0.1/tcp/2".into(), good.clone()],
        )
        .unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("/ip4/127.0.0.1/tcp/2"), "{warnings:?}");
    }

    #[test]
    fn only_answered_addresses_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(data_dir::IDENTITY_FILE), b"").unwrap();
        let failed = with_peer("/ip4/127.0.0.1/tcp/1");
        let failed = failed.as_str();
        let good = with_peer("/ip4/127.0.0.1/tcp/4001");
        let reports = vec![Report {
            addr: failed.parse().unwrap(),
            outcome: Outcome::Failed("connection refused".into()),
        }];
        assert!(
            remember_answered(dir.path(), &[failed.into()], &reports)
                .unwrap()
                .is_empty()
        );
        assert!(!dir.path().join(data_dir::CONFIG_FILE).exists());
        let msg = no_peers(&reports, false, Duration::from_secs(10)).to_string();
        assert!(
            msg.contains(failed) && msg.contains("connection refused"),
            "{msg}"
        );

        let reports = vec![Report {
            addr: good.parse().unwrap(),
            outcome: Outcome::Answered {
                peer: defs_net::PeerId::random(),
                refused: None,
                storage: true,
            },
        }];
        assert_eq!(
            remember_answered(dir.path(), std::slice::from_ref(&good), &reports).unwrap(),
            vec![good.clone()]
        );
        let config = config_file::load(&dir.path().join(data_dir::CONFIG_FILE)).unwrap();
        assert_eq!(config.node.bootstrap, vec![good]);
    }
}
