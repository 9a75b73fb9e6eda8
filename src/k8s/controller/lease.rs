//! Leader election on a `coordination.k8s.io` Lease: one replica at a time
//! reconciles (status, finalizers, the generated objects); every replica
//! serves. Optimistic concurrency (the Lease's resourceVersion) decides races.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

/// Who competes for which Lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's namespace (runner-fence's own).
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
    /// How long a holder keeps it without renewing.
    pub duration: Duration,
}

/// What this replica should do with the Lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ours: renew it.
    Renew,
    /// Free or expired: take it.
    Acquire,
    /// Someone else's, still valid.
    Follow(String),
}

/// The decision, from the Lease's spec and the time (pure).
pub fn step(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Step {
    let Some(spec) = spec else {
        return Step::Acquire;
    };
    match spec.holder_identity.as_deref() {
        Some(h) if h == identity => Step::Renew,
        None | Some("") => Step::Acquire,
        Some(holder) => {
            let duration =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            let renewed = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|t| t.0);
            match renewed {
                Some(t) if t.checked_add(duration).is_ok_and(|end| end > now) => {
                    Step::Follow(holder.to_string())
                }
                _ => Step::Acquire,
            }
        }
    }
}

fn spec_for(
    cfg: &LeaseConfig,
    now: Timestamp,
    previous: Option<&LeaseSpec>,
    acquire: bool,
) -> LeaseSpec {
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(cfg.duration.as_secs()).unwrap_or(15)),
        acquire_time: if acquire {
            Some(MicroTime(now))
        } else {
            previous.and_then(|p| p.acquire_time.clone())
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if acquire && previous.is_some() {
            transitions + 1
        } else {
            transitions
        }),
        ..LeaseSpec::default()
    }
}

/// One round: get the Lease, renew or take it when due. Ok(true) while this replica leads.
async fn round(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec_for(cfg, now, None, true)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // Another replica created it first.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    match step(lease.spec.as_ref(), &cfg.identity, now) {
        Step::Follow(_) => Ok(false),
        s => {
            lease.spec = Some(spec_for(cfg, now, lease.spec.as_ref(), s == Step::Acquire));
            // The resourceVersion read above makes this fail if anyone wrote in between.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Competes for the Lease until `stop`, publishing whether this replica leads.
/// A leader that cannot renew within the Lease duration steps down; on stop
/// it releases the Lease so the next replica takes over at once.
pub async fn run(
    client: Client,
    cfg: LeaseConfig,
    leader: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let renew_every = (cfg.duration / 3).max(Duration::from_millis(200));
    let mut last_ok = tokio::time::Instant::now();
    loop {
        match round(&api, &cfg).await {
            Ok(leads) => {
                last_ok = tokio::time::Instant::now();
                if leads != *leader.borrow() {
                    tracing::info!(lease = %cfg.name, identity = %cfg.identity, leads, "leadership changed");
                }
                leader.send_replace(leads);
            }
            Err(e) => {
                tracing::warn!(error = %e, lease = %cfg.name, "lease round failed");
                if *leader.borrow() && last_ok.elapsed() >= cfg.duration {
                    tracing::warn!(lease = %cfg.name, "could not renew the lease in time; stepping down");
                    leader.send_replace(false);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(renew_every) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if *leader.borrow() {
        leader.send_replace(false);
        if let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await
            && lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(cfg.identity.as_str())
        {
            if let Some(s) = lease.spec.as_mut() {
                s.holder_identity = None;
            }
            let _ = api.replace(&cfg.name, &PostParams::default(), &lease).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_renewed_followed_or_taken() {
        let now = Timestamp::from_second(1_000_000).expect("time");
        let ago = |s| now.checked_sub(SignedDuration::from_secs(s)).expect("time");
        assert_eq!(step(None, "me", now), Step::Acquire);
        assert_eq!(step(Some(&held_by("me", ago(100))), "me", now), Step::Renew);
        assert_eq!(
            step(Some(&held_by("other", ago(5))), "me", now),
            Step::Follow("other".into())
        );
        assert_eq!(
            step(Some(&held_by("other", ago(16))), "me", now),
            Step::Acquire,
            "expired"
        );
        assert_eq!(
            step(Some(&held_by("", ago(1))), "me", now),
            Step::Acquire,
            "released"
        );
        let never_renewed = LeaseSpec {
            holder_identity: Some("other".into()),
            ..LeaseSpec::default()
        };
        assert_eq!(step(Some(&never_renewed), "me", now), Step::Acquire);
    }
}
