//! Energy saving (ES): a capacity cell goes dormant at low load when its coverage partners can
//! carry its users, and wakes before they cannot.
//!
//! - **Capacity cell and partners.** An own NR cell whose cell site has LTE cells pointing the
//!   same way (azimuth within [`PARTNER_AZIMUTH_DEG`]): those are its coverage partners, and
//!   its users fall back to them when it sleeps. (A cell without such a partner is coverage,
//!   never put to sleep.)
//! - **Demand in partner terms.** `D = partner load + cell load × capacity ratio / partners`,
//!   the ratio being the cell's PRBs × PRB bandwidth over a partner's (an NR 100 MHz carrier
//!   is about 5.5 LTE 20 MHz carriers); while the cell is dormant its partners carry all, so
//!   `D` is their load. The highest partner's `D` counts.
//! - **Forecast.** `D` now, and `D` `lead_periods` \[3\] ahead along its least-squares slope
//!   over the last [`HISTORY`] periods: the morning ramp shows as a slope before it arrives.
//! - **Sleep** when, for `sleep_periods` \[3\] periods in a row, the forecast stays under
//!   `sleep_ceiling_pct` \[30\], every partner reported and is up.
//! - **Wake** at once when the forecast or a partner's own load reaches `wake_ceiling_pct`
//!   \[65\] (the partner's load decides alone when the forecast is unknown: the dormant cell's
//!   report is missing), or a partner is down or silent for `silent_periods` \[2\] periods (it
//!   failed).
//!
//! The thresholds in backquotes are the replicated tuning's ([`EnergySavingTuning`]; defaults
//! in brackets); the partner geometry and the history length are the algorithm's.
//! Verification judges a sleep by its partners' peak load afterwards, against
//! [`partner_peak_pct`] of the same tuning, rather than by per-user throughput, which a
//! sleeping capacity layer lowers by design.

use sonraft_raft::changeset::{ChangeSet, Function, Origin, Write};
use sonraft_raft::model::{EntityRef, Param, Rat, Value};
use sonraft_raft::son::EnergySavingTuning;

use super::view::{FastMap, RadioView, relation_key};
use super::{PeriodInput, Proposal};

/// A partner points within this many degrees of the capacity cell.
pub const PARTNER_AZIMUTH_DEG: u16 = 30;
/// Periods of demand kept per capacity cell for the slope.
pub const HISTORY: usize = 4;
/// Points above the wake ceiling at which a partner's peak load shows a sleep left it short.
const PARTNER_PEAK_MARGIN_PCT: u8 = 10;

/// The partners' peak load, percent, above which verification judges a sleep harmful: energy
/// saving should have woken the cell at the wake ceiling; [`PARTNER_PEAK_MARGIN_PCT`] more
/// means the partners ran short (75 % with the default tuning).
pub fn partner_peak_pct(tuning: &EnergySavingTuning) -> f64 {
    f64::from(
        tuning
            .wake_ceiling_pct
            .saturating_add(PARTNER_PEAK_MARGIN_PCT)
            .min(100),
    )
}

/// Bandwidth of one PRB in kHz: 12 subcarriers of 15 kHz (LTE) or 30 kHz (NR mid-band).
fn prb_khz(rat: Rat) -> f64 {
    match rat {
        Rat::Nr => 360.0,
        _ => 180.0,
    }
}

/// Recent demand of one capacity cell, and how long it has been low.
#[derive(Debug, Clone, Default)]
struct Recent {
    demand: Vec<f64>,
    low: u8,
    /// Periods in a row a partner did not report.
    silent: u8,
}

/// What energy saving keeps between periods: per own capacity cell (keyed by a hash of its
/// id), the last [`HISTORY`] periods' demand. Holds the cells of the last period only.
#[derive(Debug, Default, Clone)]
pub struct Demand {
    cells: FastMap<u64, Recent>,
    /// A copy for recomputing a period already folded in.
    frozen: bool,
}

/// The forecast of `history` (oldest first) `lead_periods` ahead: the newest value moved
/// along the least-squares slope, never below the newest value.
pub fn forecast(history: &[f64], lead_periods: u8) -> f64 {
    let Some(&last) = history.last() else {
        return 0.0;
    };
    let n = history.len() as f64;
    if history.len() < 2 {
        return last;
    }
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = history.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in history.iter().enumerate() {
        let dx = i as f64 - mean_x;
        num += dx * (y - mean_y);
        den += dx * dx;
    }
    let slope = if den > 0.0 { num / den } else { 0.0 };
    last + (slope * f64::from(lead_periods)).max(0.0)
}

/// The coverage partners of capacity cell `c`: co-site LTE cells pointing its way.
pub fn partners(view: &RadioView, c: u32) -> Vec<u32> {
    let cell = view.cell(c);
    if cell.rat != Rat::Nr {
        return Vec::new();
    }
    view.co_site(c)
        .filter(|p| {
            let pc = view.cell(*p);
            let d = cell.azimuth.abs_diff(pc.azimuth) % 360;
            pc.rat == Rat::Lte && d.min(360 - d) <= PARTNER_AZIMUTH_DEG
        })
        .collect()
}

impl Demand {
    pub fn frozen(&self) -> Demand {
        Demand {
            cells: self.cells.clone(),
            frozen: true,
        }
    }

    /// Folds this period into the recent demand and proposes sleeps and wakes.
    pub fn propose(
        &mut self,
        view: &RadioView,
        input: &PeriodInput,
        node: u64,
        now_ms: u64,
    ) -> Vec<Proposal> {
        let EnergySavingTuning {
            sleep_ceiling_pct,
            wake_ceiling_pct,
            lead_periods,
            sleep_periods,
            silent_periods,
        } = view.tuning.energy_saving;
        let (sleep_ceiling, wake_ceiling) =
            (f64::from(sleep_ceiling_pct), f64::from(wake_ceiling_pct));
        let mut out = Vec::new();
        let mut next = FastMap::default();
        for &c in &view.own {
            let ps = partners(view, c);
            if ps.is_empty() {
                continue;
            }
            let cell = view.cell(c);
            let locked = cell.down && !cell.dormant;
            let key = relation_key(view.id(c), "");
            let mut recent = self.cells.get(&key).cloned().unwrap_or_default();
            // A partner that is down, or did not report for `silent_periods` periods in a row
            // (one late report is not a failure), has failed.
            let silent = ps.iter().find(|p| !input.prb_pct.contains_key(p));
            if !self.frozen {
                recent.silent = if silent.is_some() {
                    recent.silent.saturating_add(1)
                } else {
                    0
                };
            }
            let failed =
                ps.iter()
                    .find(|p| view.cell(**p).down)
                    .or(if recent.silent >= silent_periods {
                        silent
                    } else {
                        None
                    });
            let own_load = input.prb_pct.get(&c).copied();
            // Known only when the cell and every partner reported this period.
            let demand = match (failed.or(silent), own_load) {
                (None, Some(l)) => {
                    let mut worst: f64 = 0.0;
                    for p in &ps {
                        let pl = input.prb_pct.get(p).copied().unwrap_or(0.0);
                        let moved = if cell.dormant {
                            0.0
                        } else {
                            let mine = input.prb_avail.get(&c).copied().unwrap_or(0) as f64
                                * prb_khz(cell.rat);
                            let theirs = input.prb_avail.get(p).copied().unwrap_or(0) as f64
                                * prb_khz(view.cell(*p).rat);
                            if theirs > 0.0 {
                                l * mine / theirs / ps.len() as f64
                            } else {
                                f64::INFINITY
                            }
                        };
                        worst = worst.max(pl + moved);
                    }
                    Some(worst)
                }
                _ => None,
            };
            if !self.frozen {
                match demand {
                    Some(d) => {
                        recent.demand.push(d);
                        if recent.demand.len() > HISTORY {
                            recent.demand.remove(0);
                        }
                    }
                    None => recent.demand.clear(),
                }
            }
            let ahead = forecast(&recent.demand, lead_periods);
            let partner_max = ps
                .iter()
                .filter_map(|p| input.prb_pct.get(p))
                .fold(0.0f64, |a, b| a.max(*b));
            if !self.frozen {
                recent.low = if demand.is_some() && ahead < sleep_ceiling {
                    recent.low.saturating_add(1)
                } else {
                    0
                };
            }
            let names = || {
                ps.iter()
                    .map(|p| view.id(*p))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let proposal = if cell.dormant {
                let why = if let Some(p) = failed {
                    Some(format!(
                        "coverage partner {} is down or silent: waking {} at once",
                        view.id(*p),
                        view.id(c)
                    ))
                } else if partner_max >= wake_ceiling {
                    Some(format!(
                        "partners {} at {partner_max:.0} % (wake at {wake_ceiling_pct} %): waking {}",
                        names(),
                        view.id(c)
                    ))
                } else if ahead >= wake_ceiling {
                    Some(format!(
                        "partners {} forecast at {ahead:.0} % in {lead_periods} periods (wake at {wake_ceiling_pct} %): waking {} before the load returns",
                        names(),
                        view.id(c)
                    ))
                } else {
                    None
                };
                why.map(|w| (w, "normal"))
            } else if !locked && recent.low >= sleep_periods {
                Some((
                    format!(
                        "{} at {:.0} %; partners {} would carry it at {ahead:.0} % (sleep under {sleep_ceiling_pct} % for {sleep_periods} periods): dormant",
                        view.id(c),
                        own_load.unwrap_or(0.0),
                        names()
                    ),
                    "dormant",
                ))
            } else {
                None
            };
            if let Some((reason, to)) = proposal {
                let mut read_set = vec![view.read_cell(c)];
                read_set.extend(ps.iter().map(|p| view.read_cell(*p)));
                out.push(Proposal {
                    change_set: ChangeSet {
                        origin: Origin {
                            node,
                            function: Function::EnergySaving,
                        },
                        reason,
                        read_set,
                        writes: vec![Write {
                            entity: EntityRef::cell(view.id(c)),
                            param: Param::EnergySaving,
                            value: Value::Text(to.into()),
                        }],
                        proposed_at_ms: now_ms,
                    },
                    cells: vec![view.id(c).to_string()],
                });
                if to == "dormant" {
                    recent.low = 0;
                }
            }
            next.insert(key, recent);
        }
        if !self.frozen {
            self.cells = next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sonraft_raft::model::image::NetworkImage;

    use super::super::testing::{cell, image, view};
    use super::*;

    /// Cell site A: LTE sectors A1 (azimuth 0) and A2 (120), NR capacity cell A4 (azimuth 5).
    fn img(a4_dormant: bool, a1_locked: bool) -> NetworkImage {
        let mut a1 = cell("A1", 1, 100);
        a1["azimuth"] = json!(0);
        if a1_locked {
            a1["admin_state"] = json!("locked");
        }
        let mut a2 = cell("A2", 2, 100);
        a2["azimuth"] = json!(120);
        let mut a4 = cell("A4", 504, 636_666);
        a4["azimuth"] = json!(5);
        if a4_dormant {
            a4["energy_saving"] = json!("dormant");
        }
        image(vec![a1, a2, a4], vec![])
    }

    fn input(v: &RadioView, loads: &[(&str, f64, u64)]) -> PeriodInput {
        let mut i = PeriodInput::default();
        for (c, l, prbs) in loads {
            i.prb_pct.insert(v.index[*c], *l);
            i.prb_avail.insert(v.index[*c], *prbs);
        }
        i
    }

    fn writes(ps: &[Proposal]) -> Vec<(String, String)> {
        ps.iter()
            .flat_map(|p| &p.change_set.writes)
            .map(|w| {
                let to = match &w.value {
                    Value::Text(t) => t.clone(),
                    other => other.to_string(),
                };
                (w.entity.to_string(), to)
            })
            .collect()
    }

    #[test]
    fn only_an_nr_cell_with_a_co_site_lte_cell_pointing_its_way_is_a_capacity_cell() {
        let v = view(&img(false, false));
        assert_eq!(partners(&v, v.index["A4"]), vec![v.index["A1"]]);
        assert!(partners(&v, v.index["A1"]).is_empty());
    }

    #[test]
    fn the_forecast_follows_a_rising_slope_and_ignores_a_falling_one() {
        assert_eq!(forecast(&[10.0, 20.0, 30.0, 40.0], 3), 70.0);
        assert_eq!(forecast(&[40.0, 30.0, 20.0, 10.0], 3), 10.0);
        assert_eq!(forecast(&[], 3), 0.0);
        assert_eq!(forecast(&[10.0, 20.0, 30.0, 40.0], 0), 40.0);
    }

    #[test]
    fn a_capacity_cell_stays_awake_above_the_tuned_sleep_ceiling() {
        let mut awake = view(&img(false, false));
        // The night of the test below: 26 % in partner terms, under the default 30 %.
        awake.tuning.energy_saving.sleep_ceiling_pct = 25;
        let night = input(
            &awake,
            &[("A1", 15.0, 100), ("A2", 20.0, 100), ("A4", 2.0, 273)],
        );
        let mut es = Demand::default();
        for _ in 0..2 * EnergySavingTuning::default().sleep_periods {
            assert!(es.propose(&awake, &night, 1, 0).is_empty());
        }
    }

    #[test]
    fn a_capacity_cell_sleeps_after_low_periods_and_wakes_before_the_load_returns() {
        let awake = view(&img(false, false));
        let mut es = Demand::default();
        // Night: A4 at 2 % of 273 NR PRBs is 11 % of A1's 100 LTE PRBs; A1 at 15 %.
        let night = input(
            &awake,
            &[("A1", 15.0, 100), ("A2", 20.0, 100), ("A4", 2.0, 273)],
        );
        for _ in 0..EnergySavingTuning::default().sleep_periods - 1 {
            assert!(es.propose(&awake, &night, 1, 0).is_empty());
        }
        let ps = es.propose(&awake, &night, 1, 0);
        assert_eq!(
            writes(&ps),
            vec![("cell/A4".to_string(), "dormant".to_string())]
        );
        assert!(
            ps[0].change_set.reason.contains("26 %"),
            "{}",
            ps[0].change_set.reason
        );

        // Dormant: A1 carries everything. The morning ramp wakes A4 before A1 is full.
        let dormant = view(&img(true, false));
        let mut woke = None;
        for (k, a1) in [30.0, 36.0, 42.0, 48.0, 54.0, 60.0].iter().enumerate() {
            let i = input(
                &dormant,
                &[("A1", *a1, 100), ("A2", 20.0, 100), ("A4", 0.0, 273)],
            );
            let ps = es.propose(&dormant, &i, 1, 0);
            if !ps.is_empty() {
                assert_eq!(writes(&ps)[0].1, "normal");
                woke = Some((k, *a1, ps[0].change_set.reason.clone()));
                break;
            }
        }
        let (_, load, why) = woke.expect("never woke");
        let wake = f64::from(EnergySavingTuning::default().wake_ceiling_pct);
        assert!(load < wake, "woke only at {load} %: {why}");
        assert!(why.contains("before the load returns"), "{why}");
    }

    #[test]
    fn one_late_report_of_the_partner_does_not_wake_a_dormant_cell_two_missing_do() {
        let dormant = view(&img(true, false));
        let mut es = Demand::default();
        let heard = input(
            &dormant,
            &[("A1", 30.0, 100), ("A2", 20.0, 100), ("A4", 0.0, 273)],
        );
        let silent = input(&dormant, &[("A2", 20.0, 100), ("A4", 0.0, 273)]);
        assert!(es.propose(&dormant, &heard, 1, 0).is_empty());
        assert!(
            es.propose(&dormant, &silent, 1, 0).is_empty(),
            "one late report"
        );
        assert!(es.propose(&dormant, &heard, 1, 0).is_empty());
        assert!(es.propose(&dormant, &silent, 1, 0).is_empty());
        let ps = es.propose(&dormant, &silent, 1, 0);
        assert_eq!(writes(&ps), vec![("cell/A4".into(), "normal".into())]);
    }

    #[test]
    fn a_dormant_cell_wakes_at_once_when_a_partner_crosses_the_tuned_wake_ceiling() {
        // A4's own report is missing, so no forecast: the partner's own load decides.
        let mut dormant = view(&img(true, false));
        let i = input(&dormant, &[("A1", 70.0, 100), ("A2", 20.0, 100)]);
        let ps = Demand::default().propose(&dormant, &i, 1, 0);
        assert_eq!(writes(&ps), vec![("cell/A4".into(), "normal".into())]);
        assert!(
            ps[0]
                .change_set
                .reason
                .contains("A1 at 70 % (wake at 65 %)"),
            "{}",
            ps[0].change_set.reason
        );
        dormant.tuning.energy_saving.wake_ceiling_pct = 80;
        assert!(Demand::default().propose(&dormant, &i, 1, 0).is_empty());
        let i = input(&dormant, &[("A1", 80.0, 100), ("A2", 20.0, 100)]);
        assert_eq!(
            writes(&Demand::default().propose(&dormant, &i, 1, 0)).len(),
            1
        );
    }

    #[test]
    fn a_busy_capacity_cell_stays_awake() {
        let v = view(&img(false, false));
        let mut es = Demand::default();
        // A4 at 10 % would add 55 % to A1.
        let i = input(
            &v,
            &[("A1", 20.0, 100), ("A2", 20.0, 100), ("A4", 10.0, 273)],
        );
        for _ in 0..10 {
            assert!(es.propose(&v, &i, 1, 0).is_empty());
        }
    }

    #[test]
    fn a_dormant_cell_wakes_at_once_when_its_partner_fails() {
        let mut es = Demand::default();
        let locked = view(&img(true, true));
        let i = input(&locked, &[("A2", 20.0, 100), ("A4", 0.0, 273)]);
        let ps = es.propose(&locked, &i, 1, 0);
        assert_eq!(writes(&ps), vec![("cell/A4".into(), "normal".into())]);
        assert!(ps[0].change_set.reason.contains("A1 is down or silent"));
        // Silent: no report from A1 this period (its antenna session closed).
        let dormant = view(&img(true, false));
        let i = input(&dormant, &[("A2", 20.0, 100), ("A4", 0.0, 273)]);
        assert_eq!(writes(&es.propose(&dormant, &i, 1, 0))[0].1, "normal");
        // Nor does a cell sleep while its partner is silent.
        let awake = view(&img(false, false));
        let i = input(&awake, &[("A2", 20.0, 100), ("A4", 1.0, 273)]);
        for _ in 0..10 {
            assert!(es.propose(&awake, &i, 1, 0).is_empty());
        }
    }
}
