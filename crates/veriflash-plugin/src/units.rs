//! The file device's record of which write units are programmed since their last erase, kept
//! as disjoint runs: an image written in order is one run, so the record stays a few entries
//! whatever the partition's size (a set of unit numbers took 16 MiB for 1 GiB of 4 KiB units).

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent runs of unit numbers, by start: `start -> end` (exclusive).
#[derive(Debug, Default)]
pub(crate) struct Units(BTreeMap<u64, u64>);

impl Units {
    /// Whether any unit of `units` is in the record. Runs are disjoint and sorted, so only the
    /// last run starting before `units.end` can reach into it.
    pub(crate) fn any_in(&self, units: &Range<u64>) -> bool {
        !units.is_empty()
            && self
                .0
                .range(..units.end)
                .next_back()
                .is_some_and(|(_, &end)| end > units.start)
    }

    /// Adds `units`, merging the runs it touches.
    pub(crate) fn insert(&mut self, units: Range<u64>) {
        if units.is_empty() {
            return;
        }
        let (mut start, mut end) = (units.start, units.end);
        if let Some((&s, &e)) = self.0.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
        }
        let touched: Vec<(u64, u64)> = self.0.range(start..=end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in touched {
            self.0.remove(&s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }

    /// Removes `units`, cutting the runs it overlaps.
    pub(crate) fn remove(&mut self, units: &Range<u64>) {
        if units.is_empty() {
            return;
        }
        let overlapping: Vec<(u64, u64)> = self
            .0
            .range(..units.end)
            .rev()
            .take_while(|(_, e)| **e > units.start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.0.remove(&s);
            if s < units.start {
                self.0.insert(s, units.start);
            }
            if e > units.end {
                self.0.insert(units.end, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every operation agrees with a plain set of unit numbers, over a long pseudo-random run of
    /// inserts, removals and queries on a small space (so runs touch, overlap and split).
    #[test]
    fn runs_behave_as_a_set_of_units() {
        let (mut units, mut model) = (Units::default(), BTreeSet::new());
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        for _ in 0..20_000 {
            let start = next(200);
            let range = start..start + next(12);
            match next(3) {
                0 => {
                    units.insert(range.clone());
                    model.extend(range);
                }
                1 => {
                    units.remove(&range);
                    for u in range {
                        model.remove(&u);
                    }
                }
                _ => assert_eq!(
                    units.any_in(&range),
                    model.range(range.clone()).next().is_some(),
                    "{range:?}"
                ),
            }
            // Runs stay disjoint and non-adjacent, and hold exactly the model's units.
            let mut last_end = None;
            let mut held = BTreeSet::new();
            for (&s, &e) in &units.0 {
                assert!(s < e);
                assert!(last_end.is_none_or(|l| l < s), "{:?}", units.0);
                last_end = Some(e);
                held.extend(s..e);
            }
            assert_eq!(held, model);
        }
    }
}
