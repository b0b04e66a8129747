//! Pure aggregates of the MyKey Platform.
//!
//! Promise: `decide(&State, Command, &Context) -> Result<Vec<Event>, DomainError>` and
//! `evolve(State, &Event) -> State`, with time, the acting user and an id source passed in the
//! context. No I/O, no clock, no randomness in this crate.
