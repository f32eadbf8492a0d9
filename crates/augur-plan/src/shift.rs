//! A canary traffic shift from an original to its shadow, in steps (default 1, 5, 25, 50,
//! 100 % of the original's share), each held until a KPI gate passes. A failed gate or a
//! dead shadow rolls back to the last verified weights: the weights before the first step,
//! or those of the last step whose gate passed. Weights always sum to 100.

use augur_types::{ComponentId, TrafficWeights};
use serde::Serialize;
use thiserror::Error;

/// The default steps, in percent of the original's share.
pub const DEFAULT_STEPS: [u8; 5] = [1, 5, 25, 50, 100];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShiftError {
    #[error("the weights sum to {0}, not 100")]
    NotHundred(u64),
    #[error("{0} has no weight in the service")]
    UnknownOriginal(ComponentId),
    #[error("the shadow {0} already has a weight in the service")]
    ShadowPresent(ComponentId),
    #[error("steps {0:?} must rise strictly, start above 0 and end at 100")]
    BadSteps(Vec<u8>),
}

/// What the gate of a step said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateOutcome {
    Pass,
    Fail(String),
    /// The shadow died (or could not be reached).
    ShadowDead,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShiftStep {
    /// Set these weights, then gate them.
    Apply {
        percent: u8,
        weights: TrafficWeights,
    },
    /// Every step passed: the shadow takes the original's place.
    Promote { weights: TrafficWeights },
    /// Set these (the last verified) weights back; the shift is over.
    RollBack {
        weights: TrafficWeights,
        reason: String,
    },
}

/// `weights` with `percent` of `moving` (the original's share before the shift) on the
/// shadow and the rest on the original; every other component keeps its weight, so the sum
/// stays 100. A step above 0 % of a share above 0 moves at least one point, so the shadow
/// always sees traffic to be judged on.
pub fn step_weights(
    weights: &TrafficWeights,
    original: &ComponentId,
    shadow: &ComponentId,
    moving: u32,
    percent: u8,
) -> TrafficWeights {
    let least = u32::from(percent > 0 && moving > 0);
    let to_shadow = ((moving * u32::from(percent) + 50) / 100).clamp(least, moving);
    let mut w = weights.clone();
    w.insert(original.clone(), moving - to_shadow);
    w.insert(shadow.clone(), to_shadow);
    w
}

/// One shift in flight. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shift {
    original: ComponentId,
    shadow: ComponentId,
    steps: Vec<u8>,
    /// Steps applied so far (the current one is `steps[applied - 1]`).
    applied: usize,
    moving: u32,
    verified: TrafficWeights,
    current: TrafficWeights,
    /// How the shift ended, once it has.
    ended: Option<ShiftStep>,
}

impl Shift {
    /// A shift of `original`'s share of `weights` to `shadow` in `steps`.
    pub fn new(
        weights: TrafficWeights,
        original: ComponentId,
        shadow: ComponentId,
        steps: &[u8],
    ) -> Result<Self, ShiftError> {
        let sum: u64 = weights.values().map(|&w| u64::from(w)).sum();
        if sum != 100 {
            return Err(ShiftError::NotHundred(sum));
        }
        let Some(&moving) = weights.get(&original) else {
            return Err(ShiftError::UnknownOriginal(original));
        };
        if weights.contains_key(&shadow) {
            return Err(ShiftError::ShadowPresent(shadow));
        }
        let rising = steps.windows(2).all(|w| w[0] < w[1]);
        if steps.is_empty() || steps[0] == 0 || !rising || steps.last() != Some(&100) {
            return Err(ShiftError::BadSteps(steps.to_vec()));
        }
        Ok(Self {
            original,
            shadow,
            steps: steps.to_vec(),
            applied: 0,
            moving,
            verified: weights.clone(),
            current: weights,
            ended: None,
        })
    }

    /// The weights with `percent` of the original's share on the shadow.
    fn weights_at(&self, percent: u8) -> TrafficWeights {
        step_weights(
            &self.current,
            &self.original,
            &self.shadow,
            self.moving,
            percent,
        )
    }

    /// The first step.
    pub fn start(&mut self) -> ShiftStep {
        self.advance()
    }

    fn advance(&mut self) -> ShiftStep {
        let percent = self.steps[self.applied];
        self.current = self.weights_at(percent);
        self.applied += 1;
        ShiftStep::Apply {
            percent,
            weights: self.current.clone(),
        }
    }

    /// Takes the gate of the current step and says what comes next. Before [`Shift::start`]
    /// it starts; after a promotion or a rollback the shift is over, and further gates change
    /// nothing (they answer the end again).
    pub fn on_gate(&mut self, outcome: GateOutcome) -> ShiftStep {
        if let Some(end) = &self.ended {
            return end.clone();
        }
        if self.applied == 0 {
            return self.advance();
        }
        let next = match outcome {
            GateOutcome::Pass => {
                self.verified = self.current.clone();
                if self.applied < self.steps.len() {
                    return self.advance();
                }
                ShiftStep::Promote {
                    weights: self.current.clone(),
                }
            }
            GateOutcome::Fail(reason) => self.roll_back(reason),
            GateOutcome::ShadowDead => self.roll_back("the shadow died".into()),
        };
        self.ended = Some(next.clone());
        next
    }

    fn roll_back(&mut self, reason: String) -> ShiftStep {
        self.current = self.verified.clone();
        ShiftStep::RollBack {
            weights: self.verified.clone(),
            reason,
        }
    }

    /// The weights now in force.
    pub fn current(&self) -> &TrafficWeights {
        &self.current
    }

    /// The last weights whose gate passed (the starting weights until one did).
    pub fn verified(&self) -> &TrafficWeights {
        &self.verified
    }

    /// The percentage of the original's share on the shadow now.
    pub fn percent(&self) -> u8 {
        if self.applied == 0 {
            0
        } else {
            self.steps[self.applied - 1]
        }
    }

    pub fn is_done(&self) -> bool {
        self.ended.is_some()
    }
}
