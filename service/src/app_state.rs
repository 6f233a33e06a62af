//! The state every handler shares: the process's [`Resources`] and the domain's in-process
//! state (the counts' memory and the `EMAIL_SENT` intake queue). Handlers take an
//! [`AppState`]; the domain takes only the parts it needs.

use std::sync::Arc;

use crate::config::Config;
use crate::domain::counts::CountsMemory;
use crate::domain::intake::Intake;
use crate::state::Resources;

/// The state every handler shares (cheap to clone); reads as its [`Resources`].
#[derive(Clone)]
pub struct AppState {
    resources: Resources,
    domain: Arc<Domain>,
}

struct Domain {
    counts: CountsMemory,
    intake: Arc<Intake>,
}

impl AppState {
    /// Builds the state; the pools connect lazily, [`Resources::check_database`] probes them.
    pub fn new(config: Config) -> Result<Self, sqlx::Error> {
        Ok(Self {
            resources: Resources::new(config)?,
            domain: Arc::new(Domain {
                counts: CountsMemory::default(),
                intake: Arc::default(),
            }),
        })
    }

    /// The counts' last good answers and per-scope computing locks.
    pub fn counts(&self) -> &CountsMemory {
        &self.domain.counts
    }

    /// The queued `EMAIL_SENT` enqueues, written together (group commit).
    pub fn intake(&self) -> &Arc<Intake> {
        &self.domain.intake
    }
}

impl std::ops::Deref for AppState {
    type Target = Resources;
    fn deref(&self) -> &Resources {
        &self.resources
    }
}
