//! Erlang C: the M/M/N queue (Poisson arrivals, exponential handling, N agents taking one
//! conversation each, first come first served, nobody abandoning), the classical model
//! for staffing a contact centre.
//!
//! With offered load `A = λ/μ` Erlangs and `N > A` agents:
//! `B(0) = 1`, `B(n) = A·B(n−1) / (n + A·B(n−1))` (Erlang B, computed this way to stay
//! stable for hundreds of agents), `P(wait) = C = N·B / (N − A·(1 − B))`,
//! mean wait `W = C / (Nμ − λ)`, and the service level (answered within `t`)
//! `SL(t) = 1 − C·e^{−(Nμ − λ)t}`.

/// Probability that a conversation waits, for `agents` and offered load `erlangs`; 1 when the
/// agents cannot keep up.
pub fn probability_of_waiting(agents: u32, erlangs: f64) -> f64 {
    let n = f64::from(agents);
    if agents == 0 || erlangs >= n {
        return 1.0;
    }
    let mut b = 1.0;
    for k in 1..=agents {
        b = erlangs * b / (f64::from(k) + erlangs * b);
    }
    n * b / (n - erlangs * (1.0 - b))
}

/// Mean wait (in the unit of `1/rate`) with arrival `rate` and handling `service_rate` per
/// agent; infinite when the agents cannot keep up.
pub fn mean_wait(agents: u32, rate: f64, service_rate: f64) -> f64 {
    let capacity = f64::from(agents) * service_rate;
    if capacity <= rate {
        return f64::INFINITY;
    }
    probability_of_waiting(agents, rate / service_rate) / (capacity - rate)
}

/// Share of conversations answered within `target` (same unit).
pub fn service_level(agents: u32, rate: f64, service_rate: f64, target: f64) -> f64 {
    let capacity = f64::from(agents) * service_rate;
    if capacity <= rate {
        return 0.0;
    }
    1.0 - probability_of_waiting(agents, rate / service_rate) * (-(capacity - rate) * target).exp()
}

/// The fewest agents whose service level within `target` reaches `goal` (0 to 1).
pub fn staffing(rate: f64, service_rate: f64, target: f64, goal: f64) -> u32 {
    let mut n = (rate / service_rate).floor() as u32 + 1;
    while service_level(n, rate, service_rate, target) < goal && n < 100_000 {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values computed independently (Python, from the closed form with factorials):
    // P(wait) = (A^N/N! · N/(N−A)) / (Σ_{k<N} A^k/k! + A^N/N! · N/(N−A)).
    #[test]
    fn matches_the_closed_form_computed_elsewhere() {
        for (n, a, pw) in [(5, 4.0, 0.554113), (10, 8.5, 0.529861), (20, 17.0, 0.385056), (3, 1.5, 0.236842)]
        {
            assert!((probability_of_waiting(n, a) - pw).abs() < 1e-6, "N={n} A={a}");
        }
        assert!((mean_wait(10, 8.5, 1.0) - 0.353241).abs() < 1e-6);
        assert_eq!(probability_of_waiting(4, 4.0), 1.0);
        assert!(mean_wait(4, 4.0, 1.0).is_infinite());
    }

    #[test]
    fn staffing_is_the_fewest_agents_that_meet_the_goal() {
        // 100 conversations an hour, 5 minutes each (A = 8.33), 80 % within 60 s.
        let (rate, mu, t) = (100.0 / 3600.0, 1.0 / 300.0, 60.0);
        let n = staffing(rate, mu, t, 0.8);
        assert!(service_level(n, rate, mu, t) >= 0.8);
        assert!(service_level(n - 1, rate, mu, t) < 0.8);
        assert_eq!(n, 11);
    }
}
