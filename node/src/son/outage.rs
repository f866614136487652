//! Cell outage detection: each site watches its own cells' counters for the two outages a
//! controller can see.
//!
//! The thresholds are the replicated tuning's ([`OutageTuning`]; defaults in brackets).
//!
//! - **Hard outage**: a cell that reported before is missing from `hard_periods` \[2\] closed
//!   periods in a row while `min_reporting_pct` \[50\] of the site's cells reported (its antenna
//!   stopped; when most are missing, the fault is nearer this node and nothing is concluded). A cell whose session
//!   is up and reported the period before (give or take half a period: period ends jitter) or
//!   later is *late*, not missing: its reports arrive after the period closes (a slow link, a
//!   skewed antenna clock) — until the next period shows that report never came: then the
//!   period it was excused from counts as missing after all, so a cell that falls silent with
//!   its session open (a station whose other cells go on) is found as soon as one whose
//!   session closes.
//! - **Sleeping cell**: a cell that carried users reports, for `sleeping_periods` \[2\] periods in
//!   a row, no connected user and no PRB in use while it is neither locked nor dormant: it
//!   radiates (its neighbours still hand over to it, and fail) but serves nobody.
//!
//! A cell leaves outage at its first normal report. While a cell is in outage the functions
//! whose counters it corrupts leave it alone: load balancing neither offloads it nor offloads
//! into it, mobility robustness ignores relations into it, ANR neither prunes nor bars its
//! relations (their idle and failing streaks freeze). Detection is local to the site that owns
//! the cell (it needs the raw counters); the other sites judge that cell by the KPI summary it
//! replicates, and treat one that serves nobody while it radiates as in outage
//! ([`super::view::RadioView::seems_in_outage`]: a hard outage sends no handovers their way,
//! a sleeping cell fails them). Detection is logged at INFO, and counted in
//! `sonraft_son_outages_detected_total{kind}` and `sonraft_son_cells_in_outage{kind}`.
//! Compensation by the neighbours: [`super::compensation`].

use std::collections::HashSet;

use sonraft_raft::son::OutageTuning;

use super::PeriodInput;
use super::view::{FastMap, RadioView, relation_key};

/// `OutageTuning::default().hard_periods`, for what must follow it at compile time (coverage's
/// default step count); a test keeps the two equal.
pub const DEFAULT_HARD_PERIODS: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Hard,
    Sleeping,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hard => "hard",
            Kind::Sleeping => "sleeping",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Watch {
    /// It reported at least once (a cell never heard of is not "missing").
    reported: bool,
    /// It had connected users in some report.
    carried: bool,
    missing: u8,
    /// The last period it was absent from was taken for late (its report of the period
    /// before had come): if the absent period's report never comes either, it was missing.
    excused: bool,
    idle: u8,
    state: Option<Kind>,
}

/// What detection keeps between periods, per own cell (keyed by a hash of its id). Holds the
/// cells of the last period only.
#[derive(Debug, Default, Clone)]
pub struct Outages {
    cells: FastMap<u64, Watch>,
    /// Conclusive periods seen since this node started.
    periods: u32,
    frozen: bool,
    /// The tuning of the last period folded in (the defaults before the first).
    tuning: OutageTuning,
}

impl Outages {
    pub fn frozen(&self) -> Outages {
        Outages {
            cells: self.cells.clone(),
            periods: self.periods,
            frozen: true,
            tuning: self.tuning.clone(),
        }
    }

    /// Whether enough periods were seen since the node started for an outage to have been
    /// detected: until then, "no outage" may only mean "not detected yet" (a cell that died
    /// while this node was down never reports again).
    pub fn settled(&self) -> bool {
        self.periods >= u32::from(self.tuning.hard_periods)
    }

    /// Folds this period's reports in and returns the own cells in outage now.
    pub fn update(&mut self, view: &RadioView, input: &PeriodInput) -> HashSet<u32> {
        self.tuning = view.tuning.outage.clone();
        let OutageTuning {
            hard_periods,
            sleeping_periods,
            min_reporting_pct,
        } = self.tuning;
        let reporting = view
            .own
            .iter()
            .filter(|c| input.prb_pct.contains_key(c))
            .count();
        // Integer percent of the own cells, compared exactly: the replicated threshold must
        // decide the same way on every build.
        let conclusive = !view.own.is_empty()
            && reporting * 100 >= usize::from(min_reporting_pct) * view.own.len();
        let mut next = FastMap::default();
        let mut out = HashSet::new();
        let (mut hard, mut sleeping) = (0u32, 0u32);
        for &c in &view.own {
            let key = relation_key(view.id(c), "");
            let mut w = self.cells.get(&key).copied().unwrap_or_default();
            let cell = view.cell(c);
            // A replicated KPI summary says the cell reported before, if not to this node
            // since it started.
            w.reported |= cell.prb_permille.is_some();
            if !self.frozen {
                match input.prb_pct.get(&c) {
                    Some(&prb) => {
                        let users = input.conn.get(&c).copied().unwrap_or(0);
                        w.reported = true;
                        w.missing = 0;
                        w.excused = false;
                        let idle = users == 0 && prb == 0.0;
                        w.idle = if idle && !cell.down && w.carried {
                            w.idle.saturating_add(1)
                        } else {
                            0
                        };
                        w.carried |= users > 0;
                    }
                    // Its session is up and its reports flow, after the period closes: late.
                    None if input.late.contains(&c) => {
                        w.missing = 0;
                        w.excused = true;
                    }
                    // Absent, and the report of the period it was excused from never came
                    // either: that one was missing too.
                    None if conclusive && w.reported && !cell.down => {
                        w.missing = w.missing.saturating_add(1 + u8::from(w.excused));
                        w.excused = false;
                    }
                    None => {}
                }
                let now = if w.missing >= hard_periods {
                    Some(Kind::Hard)
                } else if w.idle >= sleeping_periods {
                    Some(Kind::Sleeping)
                } else if w.state == Some(Kind::Hard)
                    && !input.prb_pct.contains_key(&c)
                    && !input.late.contains(&c)
                {
                    // Still silent, but the period says nothing (most cells silent): hold.
                    w.state
                } else {
                    None
                };
                if now != w.state {
                    match now {
                        Some(k) => {
                            tracing::info!(
                                cell = view.id(c),
                                kind = k.name(),
                                "cell outage detected"
                            );
                            metrics::counter!("sonraft_son_outages_detected_total", "kind" => k.name())
                                .increment(1);
                        }
                        None => tracing::info!(
                            cell = view.id(c),
                            kind = w.state.map_or("", Kind::name),
                            "cell outage over"
                        ),
                    }
                }
                w.state = now;
            }
            match w.state {
                Some(Kind::Hard) => hard += 1,
                Some(Kind::Sleeping) => sleeping += 1,
                None => {}
            }
            if w.state.is_some() {
                out.insert(c);
            }
            next.insert(key, w);
        }
        if !self.frozen {
            self.cells = next;
            if conclusive {
                self.periods = self.periods.saturating_add(1);
            }
            metrics::gauge!("sonraft_son_cells_in_outage", "kind" => "hard").set(f64::from(hard));
            metrics::gauge!("sonraft_son_cells_in_outage", "kind" => "sleeping")
                .set(f64::from(sleeping));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{cell, image, view};
    use super::*;

    fn input(v: &RadioView, reports: &[(&str, f64, u64)]) -> PeriodInput {
        let mut i = PeriodInput::default();
        for (c, prb, users) in reports {
            i.prb_pct.insert(v.index[*c], *prb);
            i.conn.insert(v.index[*c], *users);
        }
        i
    }

    fn img() -> sonraft_raft::model::image::NetworkImage {
        image(
            vec![
                cell("A1", 1, 100),
                cell("A2", 2, 100),
                cell("A3", 3, 100),
                cell("Z1", 4, 100),
            ],
            vec![],
        )
    }

    #[test]
    fn a_cell_missing_two_periods_is_a_hard_outage_until_it_reports() {
        let v = view(&img());
        let mut o = Outages::default();
        let all = input(&v, &[("A1", 40.0, 100), ("A2", 30.0, 90), ("A3", 20.0, 50)]);
        let without_a1 = input(&v, &[("A2", 30.0, 90), ("A3", 20.0, 50)]);
        assert!(o.update(&v, &all).is_empty());
        assert!(
            o.update(&v, &without_a1).is_empty(),
            "one period is not enough"
        );
        assert_eq!(o.update(&v, &without_a1), HashSet::from([v.index["A1"]]));
        // A frozen copy answers the same without counting the period again.
        assert_eq!(o.frozen().update(&v, &without_a1).len(), 1);
        assert!(o.update(&v, &all).is_empty(), "back at its first report");
    }

    #[test]
    fn a_tuned_hard_periods_waits_that_many_missing_periods() {
        let mut v = view(&img());
        v.tuning.outage.hard_periods = 3;
        let mut o = Outages::default();
        let all = input(&v, &[("A1", 40.0, 100), ("A2", 30.0, 90), ("A3", 20.0, 50)]);
        let without_a1 = input(&v, &[("A2", 30.0, 90), ("A3", 20.0, 50)]);
        assert!(o.update(&v, &all).is_empty());
        assert!(o.update(&v, &without_a1).is_empty());
        assert!(o.update(&v, &without_a1).is_empty(), "two are not enough");
        assert_eq!(o.update(&v, &without_a1), HashSet::from([v.index["A1"]]));
    }

    #[test]
    fn a_period_with_fewer_own_cells_reporting_than_the_tuned_share_counts_none_missing() {
        let mut v = view(&img());
        // Two of the three own cells report: conclusive at the default 50 %, not at 75 %.
        v.tuning.outage.min_reporting_pct = 75;
        let mut o = Outages::default();
        let all = input(&v, &[("A1", 40.0, 100), ("A2", 30.0, 90), ("A3", 20.0, 50)]);
        let without_a1 = input(&v, &[("A2", 30.0, 90), ("A3", 20.0, 50)]);
        assert!(o.update(&v, &all).is_empty());
        for _ in 0..4 {
            assert!(o.update(&v, &without_a1).is_empty());
        }
    }

    #[test]
    fn the_default_hard_periods_constant_is_the_tunings_default() {
        assert_eq!(DEFAULT_HARD_PERIODS, OutageTuning::default().hard_periods);
    }

    #[test]
    fn a_cell_whose_reports_arrive_after_the_period_closed_is_late_not_out() {
        let v = view(&img());
        let mut o = Outages::default();
        let all = input(&v, &[("A1", 40.0, 100), ("A2", 30.0, 90), ("A3", 20.0, 50)]);
        // A1's session is up and its reports keep coming, each after its period closed.
        let mut late = input(&v, &[("A2", 30.0, 90), ("A3", 20.0, 50)]);
        late.late.insert(v.index["A1"]);
        o.update(&v, &all);
        for _ in 0..5 {
            assert!(o.update(&v, &late).is_empty(), "late reports are no outage");
        }
        // Its session goes quiet: the report of the period before never came either, so that
        // one and this one are missing, and it is out.
        let silent = input(&v, &[("A2", 30.0, 90), ("A3", 20.0, 50)]);
        assert_eq!(o.update(&v, &silent), HashSet::from([v.index["A1"]]));
        // Its reports flow again, still late: the outage is over.
        assert!(o.update(&v, &late).is_empty());
    }

    #[test]
    fn a_cell_that_falls_silent_while_its_stations_session_stays_up_is_out_after_two_periods() {
        let v = view(&img());
        let mut o = Outages::default();
        let all = input(&v, &[("A1", 40.0, 100), ("A2", 30.0, 90), ("A3", 20.0, 50)]);
        o.update(&v, &all);
        // A1 stops; the station's session stays up. Closing the first period without it, its
        // report of the period before had come: it may be late.
        let mut first = input(&v, &[("A2", 30.0, 90), ("A3", 20.0, 50)]);
        first.late.insert(v.index["A1"]);
        assert!(o.update(&v, &first).is_empty(), "one period is not enough");
        // The second period closes and the first one's report never came: two missing.
        let second = input(&v, &[("A2", 30.0, 90), ("A3", 20.0, 50)]);
        assert_eq!(o.update(&v, &second), HashSet::from([v.index["A1"]]));
    }

    #[test]
    fn after_a_restart_a_cell_with_a_replicated_summary_that_stays_silent_is_detected() {
        let mut img = img();
        img.kpis.insert(
            "A1".into(),
            sonraft_raft::model::KpiSummary {
                cell: "A1".into(),
                period_end_ms: 1,
                prb_dl_permille: 400,
                rrc_conn_mean: 100,
                thp_dl_kbps: 10_000,
                ho_att: 10,
                ho_succ: 10,
            },
        );
        let v = view(&img);
        let mut o = Outages::default();
        assert!(!o.settled());
        let without_a1 = input(&v, &[("A2", 30.0, 90), ("A3", 20.0, 50)]);
        assert!(o.update(&v, &without_a1).is_empty());
        assert_eq!(o.update(&v, &without_a1), HashSet::from([v.index["A1"]]));
        assert!(o.settled());
    }

    #[test]
    fn when_most_cells_are_silent_nothing_is_concluded() {
        let v = view(&img());
        let mut o = Outages::default();
        let all = input(&v, &[("A1", 40.0, 100), ("A2", 30.0, 90), ("A3", 20.0, 50)]);
        let one = input(&v, &[("A3", 20.0, 50)]);
        o.update(&v, &all);
        for _ in 0..5 {
            assert!(o.update(&v, &one).is_empty());
        }
        // A cell never heard of is not missing either.
        let mut fresh = Outages::default();
        let two = input(&v, &[("A2", 30.0, 90), ("A3", 20.0, 50)]);
        for _ in 0..5 {
            assert!(fresh.update(&v, &two).is_empty());
        }
    }

    #[test]
    fn a_cell_that_carried_users_and_now_serves_nobody_is_sleeping() {
        let v = view(&img());
        let mut o = Outages::default();
        let busy = input(&v, &[("A1", 40.0, 100), ("A2", 30.0, 90), ("A3", 20.0, 50)]);
        let asleep = input(&v, &[("A1", 0.0, 0), ("A2", 30.0, 90), ("A3", 20.0, 50)]);
        o.update(&v, &busy);
        assert!(o.update(&v, &asleep).is_empty());
        assert_eq!(o.update(&v, &asleep), HashSet::from([v.index["A1"]]));
        assert!(o.update(&v, &busy).is_empty());
        // A cell that never carried anyone (a new, unused cell) is not sleeping.
        let mut fresh = Outages::default();
        for _ in 0..5 {
            assert!(fresh.update(&v, &asleep).is_empty());
        }
    }
}
