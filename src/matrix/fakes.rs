//! The fake providers (GHL, Unipile, the AI model) on loopback, as an arm or the stack runs
//! them: real HTTP servers with the scenario's knobs.

use fake_providers::{Fakes, Provider};
use sqlx::{ConnectOptions, Connection};

use crate::postgres::PgServer;
use crate::scenario::Scenario;

/// The fake providers on loopback; stopped when dropped.
pub(crate) struct FakesServer {
    pub(crate) fakes: Fakes,
    /// `http://127.0.0.1:PORT`; each provider under its own path (`/ghl`, `/unipile`, `/ai`).
    pub(crate) base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakesServer {
    /// Starts the fakes with the scenario's knobs; `disconnected` are Unipile's disconnected
    /// workspaces.
    pub(crate) async fn start(scenario: &Scenario, disconnected: Vec<i64>) -> anyhow::Result<Self> {
        let fakes = Fakes::new(scenario.seed);
        for (provider, knobs) in &scenario.providers {
            fakes.set(*provider, knobs.clone());
        }
        // Unipile knows which workspaces are disconnected.
        let mut unipile = fakes.knobs(Provider::Unipile);
        unipile.disconnected_workspaces.extend(disconnected);
        fakes.set(Provider::Unipile, unipile);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
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
