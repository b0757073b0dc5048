//! Precomputes the PCR values a Veil image produces when it boots (PCR 4, 9, 11, 12, 13)
//! and replays TPM event logs. (Being written: see issue 3.)
