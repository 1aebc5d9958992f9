//! What a run measured, and the report.

use serde::Serialize;

/// Counting as the run goes.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    members: Vec<usize>,
    arrived: u64,
    unassigned: u64,
    unanswered: u64,
    waits: Vec<i64>,
    abandoned: Vec<i64>,
    per_agent: Vec<u32>,
    busy: Vec<i64>,
    estimate_errors: Vec<f64>,
    returning: u64,
    same_agent: u64,
    queue_area: f64,
    queue_area_by_hour: [f64; 24],
    last_at: i64,
    last_queue: usize,
    target_millis: i64,
}

/// One strategy's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// Conversations that arrived.
    pub arrived: u64,
    /// Answered by an agent.
    pub answered: u64,
    /// Left while waiting.
    pub abandoned: u64,
    /// Left unassigned (nobody could take it and the routing did not queue it, or the
    /// workflow ended without assigning).
    pub unassigned: u64,
    /// Still waiting when the simulation ended (nobody on shift came to answer).
    pub unanswered: u64,
    /// Share of those that came that left.
    pub abandonment: f64,
    /// Waiting time of the answered, seconds: mean, median, 90th and 99th percentile.
    pub wait_mean_seconds: f64,
    /// Median.
    pub wait_median_seconds: f64,
    /// 90th percentile.
    pub wait_p90_seconds: f64,
    /// 99th percentile.
    pub wait_p99_seconds: f64,
    /// Share of the answered that waited at all.
    pub probability_of_waiting: f64,
    /// Share of all arrivals answered within the target.
    pub service_level: f64,
    /// Share of agent capacity (max_open × time on shift, summed over the agents) spent
    /// handling.
    pub occupancy: f64,
    /// Mean queue length over time.
    pub mean_queue: f64,
    /// Conversations per agent: fewest and most.
    pub per_agent_min: u32,
    /// Most.
    pub per_agent_max: u32,
    /// Gini coefficient of conversations per agent (0: perfectly even).
    pub gini_conversations: f64,
    /// Gini coefficient of busy time per agent.
    pub gini_busy_time: f64,
    /// The queue's wait estimates against the waits that followed: mean error (estimate −
    /// wait) and mean absolute error, seconds, over answered conversations that had one.
    pub estimate_mean_error_seconds: f64,
    /// Mean absolute error.
    pub estimate_mean_absolute_error_seconds: f64,
    /// Waiting times of the answered in seconds, bucketed by whole seconds up to 10 minutes
    /// (the distribution for the chart).
    #[serde(skip)]
    pub histogram: Vec<u64>,
    /// Conversations per agent (of the team, in id order).
    #[serde(skip)]
    pub per_agent: Vec<u32>,
    /// Mean queue length in each hour of the day (0 to 23).
    pub queue_by_hour: Vec<f64>,
    /// Answered conversations of returning contacts whose previous agent was known.
    #[serde(skip_serializing_if = "is_zero")]
    pub returning_answered: u64,
    /// Of those, the share answered by that previous agent (none: there were none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_agent_share: Option<f64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The Gini coefficient of non-negative values.
pub fn gini(values: &[f64]) -> f64 {
    let n = values.len();
    let total: f64 = values.iter().sum();
    if n == 0 || total <= 0.0 {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let weighted: f64 = v.iter().enumerate().map(|(i, x)| (i as f64 + 1.0) * x).sum();
    (2.0 * weighted) / (n as f64 * total) - (n as f64 + 1.0) / n as f64
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

impl Tally {
    /// A tally of conversations counted for `members` (indices among `agents`).
    pub(crate) fn new(members: Vec<usize>, agents: usize, target_seconds: f64) -> Tally {
        Tally {
            members,
            arrived: 0,
            unassigned: 0,
            unanswered: 0,
            waits: Vec::new(),
            abandoned: Vec::new(),
            per_agent: vec![0; agents],
            busy: vec![0; agents],
            estimate_errors: Vec::new(),
            returning: 0,
            same_agent: 0,
            queue_area: 0.0,
            queue_area_by_hour: [0.0; 24],
            last_at: 0,
            last_queue: 0,
            target_millis: (target_seconds * 1000.0) as i64,
        }
    }

    pub(crate) fn arrived(&mut self) {
        self.arrived += 1;
    }

    /// A conversation moved on to another team (counted there from now on).
    pub(crate) fn moved_out(&mut self) {
        self.arrived = self.arrived.saturating_sub(1);
    }

    /// Still waiting when the simulation ended.
    pub(crate) fn unanswered(&mut self) {
        self.unanswered += 1;
    }

    pub(crate) fn unassigned(&mut self) {
        self.unassigned += 1;
    }

    pub(crate) fn queue_at(&mut self, now: i64, queue: usize) {
        let area = self.last_queue as f64 * (now - self.last_at) as f64;
        self.queue_area += area;
        // Intervals between events are short: each is counted in the hour it began.
        self.queue_area_by_hour[usize::try_from((self.last_at / 3_600_000) % 24).unwrap_or(0)] += area;
        self.last_at = now;
        self.last_queue = queue;
    }

    /// Answered after waiting `waited` milliseconds since its arrival; `estimate` is the
    /// queue's estimate (seconds) and the wait in the queue that followed it (milliseconds);
    /// `previous`, for a returning contact, whether it was its previous agent.
    pub(crate) fn answered(
        &mut self,
        waited: i64,
        agent: usize,
        estimate: Option<(u64, i64)>,
        previous: Option<bool>,
    ) {
        self.waits.push(waited);
        if let Some(same) = previous {
            self.returning += 1;
            self.same_agent += u64::from(same);
        }
        if let Some(n) = self.per_agent.get_mut(agent) {
            *n += 1;
        }
        if let Some((e, followed)) = estimate {
            self.estimate_errors.push(e as f64 - followed as f64 / 1000.0);
        }
    }

    pub(crate) fn abandoned(&mut self, waited: i64) {
        self.abandoned.push(waited);
    }

    pub(crate) fn busy(&mut self, agent: usize, millis: i64) {
        if let Some(b) = self.busy.get_mut(agent) {
            *b += millis;
        }
    }

    /// The outcome: `capacity` is the members' staffed capacity (slot-milliseconds).
    pub(crate) fn finish(mut self, end: i64, capacity: f64) -> Outcome {
        self.waits.sort_unstable();
        let answered = self.waits.len() as u64;
        let abandoned = self.abandoned.len() as u64;
        let arrived = self.arrived;
        let within = self.waits.iter().filter(|w| **w <= self.target_millis).count() as u64;
        let waited = self.waits.iter().filter(|w| **w > 0).count() as u64;
        let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let mut histogram = vec![0u64; 601];
        for w in &self.waits {
            histogram[usize::try_from(w / 1000).unwrap_or(0).min(600)] += 1;
        }
        let counts: Vec<u32> =
            self.members.iter().map(|i| self.per_agent.get(*i).copied().unwrap_or(0)).collect();
        let busy: Vec<f64> =
            self.members.iter().map(|i| self.busy.get(*i).copied().unwrap_or(0) as f64).collect();
        let errors = &self.estimate_errors;
        let n_err = errors.len().max(1) as f64;
        Outcome {
            arrived,
            answered,
            abandoned,
            unassigned: self.unassigned,
            unanswered: self.unanswered,
            abandonment: share(abandoned, arrived),
            wait_mean_seconds: if answered == 0 {
                0.0
            } else {
                self.waits.iter().sum::<i64>() as f64 / answered as f64 / 1000.0
            },
            wait_median_seconds: percentile(&self.waits, 0.5),
            wait_p90_seconds: percentile(&self.waits, 0.9),
            wait_p99_seconds: percentile(&self.waits, 0.99),
            probability_of_waiting: share(waited, answered),
            service_level: share(within, arrived),
            occupancy: if capacity > 0.0 { busy.iter().sum::<f64>() / capacity } else { 0.0 },
            mean_queue: self.queue_area / end.max(1) as f64,
            per_agent_min: counts.iter().copied().min().unwrap_or(0),
            per_agent_max: counts.iter().copied().max().unwrap_or(0),
            gini_conversations: gini(&counts.iter().map(|n| f64::from(*n)).collect::<Vec<_>>()),
            gini_busy_time: gini(&busy),
            // (An empty sum of floats is -0.0: no estimates print as 0.)
            estimate_mean_error_seconds: errors.iter().fold(0.0, |a, e| a + e) / n_err,
            estimate_mean_absolute_error_seconds: errors.iter().fold(0.0, |a, e| a + e.abs()) / n_err,
            histogram,
            per_agent: counts,
            queue_by_hour: {
                let per_hour = end.max(1) as f64 / 24.0;
                self.queue_area_by_hour.iter().map(|a| a / per_hour).collect()
            },
            returning_answered: self.returning,
            same_agent_share: (self.returning > 0).then(|| share(self.same_agent, self.returning)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gini_is_zero_when_even_and_grows_with_inequality() {
        assert_eq!(gini(&[5.0, 5.0, 5.0, 5.0]), 0.0);
        // One of four does everything: (n − 1) / n.
        assert!((gini(&[0.0, 0.0, 0.0, 8.0]) - 0.75).abs() < 1e-12);
        assert!(gini(&[1.0, 2.0, 3.0, 4.0]) > 0.0 && gini(&[1.0, 2.0, 3.0, 4.0]) < 0.75);
        assert_eq!(gini(&[]), 0.0);
    }
}
