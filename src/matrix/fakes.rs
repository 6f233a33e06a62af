//! The fake providers (GHL, Unipile, the AI model) on loopback, as an arm or the stack runs
//! them: real HTTP servers with the scenario's knobs.

use fake_providers::{Fakes, Provider};
use sqlx::{ConnectOptions, Connection};

use crate::model::Scenario;
use crate::postgres::PgServer;

/// The fake providers on loopback; stopped when dropped.
pub(crate) struct FakesServer {
    pub(crate) fakes: Fakes,
    /// `http://127.0.0.1:PORT`; each provider under its own path (`/ghl`, `/unipile`, `/ai`).
    pub(crate) base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakesServer {
    /// Starts the fakes with the scenario's knobs on loopback; `disconnected` are Unipile's
    /// disconnected workspaces.
    pub(crate) async fn start(scenario: &Scenario, disconnected: Vec<i64>) -> anyhow::Result<Self> {
        Self::start_on(scenario, disconnected, ([127, 0, 0, 1], 0).into()).await
    }

    /// [`FakesServer::start`], listening on `listen`.
    pub(crate) async fn start_on(
        scenario: &Scenario,
        disconnected: Vec<i64>,
        listen: std::net::SocketAddr,
    ) -> anyhow::Result<Self> {
        let fakes = Fakes::new(scenario.seed);
        for (provider, knobs) in &scenario.providers {
            fakes.set(*provider, knobs.clone());
        }
        // Unipile knows which workspaces are disconnected.
        let mut unipile = fakes.knobs(Provider::Unipile);
        unipile.disconnected_workspaces.extend(disconnected);
        fakes.set(Provider::Unipile, unipile);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = {
            let fakes = fakes.clone();
            tokio::spawn(async move {
                let _ = fakes
                    .serve(listener, async move {
                        let _ = stopped.await;
                    })
                    .await;
            })
        };
        Ok(Self {
            fakes,
            base,
            stop: Some(stop),
            task,
        })
    }

    /// Every provider answers at once from now on (its error mix, truncation and disconnected
    /// accounts kept): the queue drained after the load only has to reach its end state for
    /// the invariant, and with the scenario's latency L and W workers it could not pass W ÷ L
    /// (the incident's 8 workers and ~200 ms GHL: 40 jobs/s, ~30 s of waiting on nothing per
    /// async arm). The load has measured the provider's latency already.
    pub(crate) fn answer_at_once(&self) {
        for provider in Provider::ALL {
            let mut knobs = self.fakes.knobs(provider);
            knobs.latency = fake_providers::Latency::default();
            self.fakes.set(provider, knobs);
        }
    }

    /// Calls received, every provider.
    pub(crate) fn calls(&self) -> u64 {
        let counters = self.fakes.counters();
        [Provider::Ghl, Provider::Unipile, Provider::Ai]
            .into_iter()
            .map(|p| counters.total(p))
            .sum()
    }
}

impl Drop for FakesServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// The workspaces seeded with a disconnected LinkedIn account.
pub(crate) async fn disconnected_workspaces(
    server: &PgServer,
    db: &str,
) -> anyhow::Result<Vec<i64>> {
    let mut conn = server.connect_options(db).connect().await?;
    let ids = sqlx::query_scalar("SELECT id FROM workspaces WHERE unipile_status = 'disconnected'")
        .fetch_all(&mut conn)
        .await?;
    conn.close().await?;
    Ok(ids)
}

/// `incident-lab fakes`: the fake providers alone, with the scenario's knobs, until stopped
/// (a stack in another process or container tells Unipile its disconnected workspaces).
pub async fn serve_alone(scenario: &Scenario, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let fakes = FakesServer::start_on(scenario, Vec::new(), listen).await?;
    println!("fakes: {}", fakes.base);
    println!(
        "  knobs: GET|PUT {0}/_control/ghl|unipile|ai; calls: {0}/_counters",
        fakes.base
    );
    println!("up; Ctrl-C to stop");
    crate::interrupt::stopped().await;
    drop(fakes);
    Ok(())
}

/// Tells fakes the harness did not start (at `base`) which workspaces are disconnected,
/// through their control endpoint; waits up to 30 s for them to answer.
pub(crate) async fn tell_disconnected(base: &str, disconnected: &[i64]) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!("{base}/_control/unipile");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut knobs: fake_providers::Knobs = loop {
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => break r.json().await?,
            other if std::time::Instant::now() >= deadline => {
                anyhow::bail!("the fakes at {base} did not answer {url}: {other:?}")
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
    };
    knobs
        .disconnected_workspaces
        .extend(disconnected.iter().copied());
    let r = http.put(&url).json(&knobs).send().await?;
    anyhow::ensure!(
        r.status().is_success(),
        "{url} refused the disconnected workspaces: {}",
        r.status()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The drain's providers keep everything of the scenario's knobs but the latency.
    #[tokio::test]
    async fn for_the_drain_only_the_latency_goes() {
        let scenario =
            Scenario::parse("unit.toml", include_str!("../../scenarios/incident.toml")).unwrap();
        let server = FakesServer::start(&scenario, vec![7]).await.unwrap();
        let before: Vec<_> = Provider::ALL
            .iter()
            .map(|p| server.fakes.knobs(*p))
            .collect();
        assert!(before[0].latency.base_ms > 0, "{:?}", before[0]);

        server.answer_at_once();

        for (p, was) in Provider::ALL.iter().zip(before) {
            let now = server.fakes.knobs(*p);
            assert_eq!(now.latency, fake_providers::Latency::default(), "{p:?}");
            assert_eq!(
                fake_providers::Knobs {
                    latency: was.latency.clone(),
                    ..now
                },
                was,
                "{p:?}: only the latency changes"
            );
        }
        assert!(server
            .fakes
            .knobs(Provider::Unipile)
            .disconnected_workspaces
            .contains(&7));
    }
}
