//! In-flight bookkeeping made with the first packet that needs it and dropped when its session is
//! idle with nothing in it, so that an idle session holds none of its tables (issue 13). The
//! link ([`super::embedded`]) and the forwarder (`crate::mqtt::forward`) keep theirs in one.

/// What an [`OnDemand`] holds.
pub trait InFlight: Default {
    /// Nothing is in flight: the state can go.
    fn is_settled(&self) -> bool;
}

/// A state of type `T`, allocated only while something is in flight.
#[derive(Default)]
pub struct OnDemand<T>(Option<Box<T>>);

impl<T: InFlight> OnDemand<T> {
    /// The state, made now if there is none.
    pub fn get(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }

    /// The state, if there is one.
    pub fn held(&self) -> Option<&T> {
        self.0.as_deref()
    }

    /// Drops the state when nothing is in flight.
    pub fn idle(&mut self) {
        if self.0.as_deref().is_some_and(T::is_settled) {
            self.0 = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Ids(Vec<u16>);

    impl InFlight for Ids {
        fn is_settled(&self) -> bool {
            self.0.is_empty()
        }
    }

    #[test]
    fn the_state_goes_when_settled_and_comes_back_when_needed() {
        let mut ids = OnDemand::<Ids>::default();
        assert!(ids.held().is_none());
        ids.get().0.push(7);
        ids.idle();
        assert_eq!(ids.held().map(|ids| ids.0.len()), Some(1), "7 is in flight");
        ids.get().0.clear();
        ids.idle();
        assert!(ids.held().is_none());
        ids.get().0.push(8);
        assert_eq!(ids.held().map(|ids| ids.0.len()), Some(1));
    }
}
