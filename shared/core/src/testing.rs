//! Given/when/then for deciders:
//!
//! ```ignore
//! given::<User>([registered("alice")])
//!     .when(register("alice"))
//!     .then_err(UserError::UsernameTaken);
//! ```

use std::fmt::Debug;

use crate::Aggregate;

/// Starts a scenario from the events already in the aggregate's history.
pub fn given<A: Aggregate>(history: impl IntoIterator<Item = A::Event>) -> Given<A> {
    given_from(A::default(), history)
}

/// As [`given`], folding the history into `seed` (an empty state carrying
/// what the aggregate takes from outside its events: see [`Aggregate::adopt`]).
pub fn given_from<A: Aggregate>(seed: A, history: impl IntoIterator<Item = A::Event>) -> Given<A> {
    Given { seed, history: history.into_iter().collect() }
}

pub struct Given<A: Aggregate> {
    seed: A,
    history: Vec<A::Event>,
}

impl<A: Aggregate> Given<A> {
    /// Runs the command against the state the history produces.
    pub fn when(self, command: A::Command) -> When<A> {
        let mut state = self.seed;
        for e in &self.history {
            state.evolve(e);
        }
        let outcome = state.decide(&command);
        When { state, command, outcome }
    }
}

pub struct When<A: Aggregate> {
    state: A,
    command: A::Command,
    outcome: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> When<A>
where
    A::Event: PartialEq,
{
    /// Asserts the command produced exactly these events, and returns the
    /// state after applying them for further checks.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<_> = expected.into_iter().collect();
        match self.outcome {
            Ok(events) => {
                assert_eq!(events, expected, "command {:?} on {:?}", self.command, self.state);
                let mut state = self.state;
                for e in &events {
                    state.evolve(e);
                }
                state
            }
            Err(e) => {
                panic!("command {:?} on {:?} failed with {e:?}, expected events {expected:?}", self.command, self.state)
            }
        }
    }

    /// Asserts the command was accepted and returns its events (for
    /// checks on events whose fields are computed).
    #[track_caller]
    pub fn then_ok(self) -> Vec<A::Event> {
        match self.outcome {
            Ok(events) => events,
            Err(e) => panic!("command {:?} on {:?} failed with {e:?}", self.command, self.state),
        }
    }

    /// Asserts the command was accepted and returns the state after its events.
    #[track_caller]
    pub fn then_state(self) -> A {
        match self.outcome {
            Ok(events) => {
                let mut state = self.state;
                for e in &events {
                    state.evolve(e);
                }
                state
            }
            Err(e) => panic!("command {:?} on {:?} failed with {e:?}", self.command, self.state),
        }
    }

    /// Asserts the command was refused with this error.
    #[track_caller]
    pub fn then_err(self, expected: A::Error)
    where
        A::Error: PartialEq + Debug,
    {
        match self.outcome {
            Ok(events) => panic!(
                "command {:?} on {:?} produced {events:?}, expected error {expected:?}",
                self.command, self.state
            ),
            Err(e) => assert_eq!(e, expected, "command {:?} on {:?}", self.command, self.state),
        }
    }
}
