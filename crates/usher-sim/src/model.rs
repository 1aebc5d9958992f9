//! What a simulation is asked: traffic, staff and the strategies to compare.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// A distribution of durations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    /// Exponential with this mean.
    Exponential {
        /// Mean, seconds.
        mean_seconds: f64,
    },
    /// Log-normal with this median and shape.
    LogNormal {
        /// Median, seconds.
        median_seconds: f64,
        /// Standard deviation of the logarithm.
        sigma: f64,
    },
    /// Always the same.
    Fixed {
        /// Seconds.
        seconds: f64,
    },
}

impl Dist {
    /// Its mean, seconds.
    pub fn mean_seconds(&self) -> f64 {
        match self {
            Dist::Exponential { mean_seconds } => *mean_seconds,
            Dist::LogNormal { median_seconds, sigma } => median_seconds * (sigma * sigma / 2.0).exp(),
            Dist::Fixed { seconds } => *seconds,
        }
    }
}

/// One simulation's setup (a JSON or TOML file, or flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// Arrivals per hour: one rate, or 168 (one per hour of the week, Monday 00:00 first).
    pub rate_per_hour: Vec<f64>,
    /// How long to simulate, hours.
    pub hours: f64,
    /// Handling time.
    pub handle: Dist,
    /// How long a customer waits before leaving (none: for ever).
    #[serde(default)]
    pub patience: Option<Dist>,
    /// Agents.
    pub agents: u32,
    /// Conversations an agent holds at once.
    #[serde(default = "one")]
    pub max_open: u32,
    /// Handling slows by this share for every conversation held beyond the first.
    #[serde(default)]
    pub slowdown: f64,
    /// Weights of the agents in order (the weighted strategy); 1 when not given.
    #[serde(default)]
    pub weights: Vec<u32>,
    /// The answer-time target of the service level, seconds.
    #[serde(default = "twenty")]
    pub target_seconds: f64,
    /// The service level to reach for the staffing advice (0 to 1).
    #[serde(default = "eighty")]
    pub service_goal: f64,
    /// The handling time the queue's estimate assumes before it has seen releases.
    #[serde(default = "three_hundred")]
    pub default_handle_seconds: u32,
    /// The seed: the same seed gives the same report, byte for byte.
    #[serde(default = "seed")]
    pub seed: u64,
}

fn one() -> u32 {
    1
}
fn twenty() -> f64 {
    20.0
}
fn eighty() -> f64 {
    0.8
}
fn three_hundred() -> u32 {
    300
}
fn seed() -> u64 {
    1
}

/// Why a setup cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// A value out of range, named.
    #[error("{0}")]
    Invalid(String),
}

impl Setup {
    /// Checks the setup.
    pub fn check(&self) -> Result<(), SetupError> {
        let bad = |m: &str| Err(SetupError::Invalid(m.to_string()));
        if !(self.rate_per_hour.len() == 1 || self.rate_per_hour.len() == 168) {
            return bad("rate_per_hour holds one rate or 168 (one per hour of the week)");
        }
        if self.rate_per_hour.iter().any(|r| !r.is_finite() || *r < 0.0)
            || self.rate_per_hour.iter().all(|r| *r == 0.0)
        {
            return bad("rates are finite, not negative, and not all zero");
        }
        if !(self.hours > 0.0 && self.hours <= 24.0 * 366.0 * 10.0) {
            return bad("hours must be above 0 and at most ten years");
        }
        if self.agents == 0 || self.agents > 100_000 || self.max_open == 0 || self.max_open > 1_000 {
            return bad("agents must be 1 to 100000 and max_open 1 to 1000");
        }
        for d in std::iter::once(&self.handle).chain(self.patience.iter()) {
            if !(d.mean_seconds().is_finite() && d.mean_seconds() > 0.0) {
                return bad("durations must have a positive, finite mean");
            }
        }
        if !(0.0..=10.0).contains(&self.slowdown)
            || !(0.0..=1.0).contains(&self.service_goal)
            || self.target_seconds < 0.0
        {
            return bad("slowdown is 0 to 10, service_goal 0 to 1, target_seconds not negative");
        }
        Ok(())
    }

    /// The rate at virtual time `millis`, per millisecond.
    fn rate_at(&self, millis: f64) -> f64 {
        let hour = if self.rate_per_hour.len() == 1 { 0 } else { ((millis / 3_600_000.0) as usize) % 168 };
        self.rate_per_hour[hour] / 3_600_000.0
    }

    /// The next arrival after `now` (milliseconds): a Poisson process whose rate follows the
    /// hour of the week, drawn by thinning.
    pub fn next_arrival(&self, rng: &mut Rng, now: f64) -> Option<f64> {
        let top = self.rate_per_hour.iter().copied().fold(0.0, f64::max) / 3_600_000.0;
        if top <= 0.0 {
            return None;
        }
        let mut t = now;
        for _ in 0..1_000_000 {
            t += rng.exponential(1.0 / top);
            if rng.unit() * top <= self.rate_at(t) {
                return Some(t);
            }
        }
        None
    }

    /// The mean arrival rate over a week, per second.
    pub fn mean_rate_per_second(&self) -> f64 {
        self.rate_per_hour.iter().sum::<f64>() / self.rate_per_hour.len() as f64 / 3600.0
    }
}
