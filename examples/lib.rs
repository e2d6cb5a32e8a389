//! Examples of burn-set; see the `[[example]]` targets.
