//! Conversion from the SLA model of `oakestra-core` (lands once core has it).
