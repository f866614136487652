//! Planting an overshooting cell: what a radio engineer finds on a drive test as a "boomer".
//!
//! The cell's site stands much higher than its neighbours ([`OVERSHOOTER_MAST_M`]: a mast on
//! a hilltop, or antennas on the roof of a tower block), and its antenna was installed at
//! 0° electrical tilt (a remote electrical tilt unit left at its factory setting). Its main
//! lobe then grazes the rooftops towards the horizon and lands behind the first ring of
//! neighbours, where it is the strongest server in scattered patches: users there hang on a
//! far cell at low SINR, hand over late and load it with traffic it serves badly.
//!
//! The geometry is physical, so the configuration the node pushes cannot undo it; what fixes
//! it is what a radio engineer would do: downtilt (the steep side of the vertical pattern
//! then points at the far area) and, where the tilt box runs out, less power. The node sees it
//! in the cell's timing-advance distribution (`TA.Distr.Bin*`).
//!
//! The height enters the radio layer twice: in the depression angle from the mast to each
//! bin (so tilt matters more), and as the base-station-height terms of the COST 231-Hata model
//! relative to the 25 m of TR 38.901 UMa (`crate::radio::height_gain_db`): about 8 dB less
//! loss at 1 km for a 100 m mast (75 m above the 25 m of its neighbours).

use super::Topology;

/// Height of an overshooter's mast, metres.
pub const OVERSHOOTER_MAST_M: f32 = 100.0;
/// Tilt an overshooter was installed with, 0.1°.
pub const OVERSHOOTER_TILT: i16 = 0;

impl Topology {
    /// Makes `cell` an overshooter: its site's mast [`OVERSHOOTER_MAST_M`] high, and the cell
    /// installed at [`OVERSHOOTER_TILT`]. Refuses a cell the network does not have.
    pub fn plant_overshooter(&mut self, cell: &str) -> Result<(), String> {
        let c = self
            .cells
            .iter()
            .position(|x| x.id == cell)
            .ok_or_else(|| format!("--overshooter: no cell {cell}"))?;
        let site = self.cells[c].site;
        self.sites[site].mast_m = OVERSHOOTER_MAST_M;
        self.cells[c].installed_tilt = OVERSHOOTER_TILT;
        if !self.problems.overshooters.contains(&c) {
            self.problems.overshooters.push(c);
        }
        Ok(())
    }
}
