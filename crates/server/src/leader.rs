//! Roles only one instance plays at a time when several share a database: the CDR pipeline (two
//! builders of one call could overwrite a newer CDR with an older one) and the alert evaluator
//! and deliverer (two would send every notice twice). Each loop turn asks `Role::turn` whether
//! this instance plays the role now; the others stand by and take over when the lease frees.

use crate::store::{Lease, Store};

/// What this instance is for a role at one loop turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// It held the lease already.
    Leading,
    /// It has just taken the lease: state kept from before must be reloaded from the store.
    Took,
    /// Another instance holds it.
    Standby,
}

/// A role and, while this instance plays it, its lease.
pub struct Role {
    name: &'static str,
    lease: Option<Box<dyn Lease>>,
}

impl Role {
    pub fn new(name: &'static str) -> Role {
        Role { name, lease: None }
    }

    /// Keeps or takes the lease.
    pub async fn turn(&mut self, store: &dyn Store) -> Turn {
        if let Some(lease) = &mut self.lease {
            if lease.held().await {
                return Turn::Leading;
            }
            tracing::warn!(role = self.name, "lost the lease");
            self.lease = None;
        }
        match store.try_lease(self.name).await {
            Ok(Some(lease)) => {
                tracing::debug!(role = self.name, "took the lease");
                self.lease = Some(lease);
                Turn::Took
            }
            Ok(None) => Turn::Standby,
            Err(e) => {
                tracing::error!(role = self.name, error = %e, "could not ask for the lease");
                Turn::Standby
            }
        }
    }
}
