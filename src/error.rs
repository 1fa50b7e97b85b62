//! One classification of faults. Every error type of the library says what
//! kind of fault it is ([`Classify`]); the CLI's exit code and the API's
//! HTTP status are both derived from that, each in one function
//! ([`Fault::exit_code`], [`Fault::http_status`]), so a fault is reported
//! the same way whichever face the user came through. This module depends
//! on nothing: the faces do the looking up (the API through `Classify`
//! directly, the CLI through its registry of error types in `cli/mod.rs`).

/// What kind of fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request or input is wrong (malformed file, invalid setting).
    BadInput,
    /// It names something that does not exist.
    NotFound,
    /// Not allowed in the current state (status, running, name taken,
    /// cool-off).
    Conflict,
    /// A configured limit was reached.
    Limit,
    /// Our fault or the machine's: store, I/O, a thread that died.
    Internal,
}

impl Fault {
    /// The CLI's exit code: 2 for what the user can correct, 1 otherwise.
    pub fn exit_code(self) -> i32 {
        match self {
            Fault::Internal => 1,
            Fault::BadInput | Fault::NotFound | Fault::Conflict | Fault::Limit => 2,
        }
    }

    /// The REST API's status code.
    pub fn http_status(self) -> u16 {
        match self {
            Fault::BadInput => 400,
            Fault::NotFound => 404,
            Fault::Conflict => 409,
            Fault::Limit => 429,
            Fault::Internal => 500,
        }
    }
}

/// Implemented by every error type of the library.
pub trait Classify {
    /// What kind of fault this is.
    fn fault(&self) -> Fault;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_statuses_derive_from_one_fault() {
        let all = [
            Fault::BadInput,
            Fault::NotFound,
            Fault::Conflict,
            Fault::Limit,
            Fault::Internal,
        ];
        let statuses: Vec<u16> = all.iter().map(|f| f.http_status()).collect();
        assert_eq!(statuses, [400, 404, 409, 429, 500]);
        let codes: Vec<i32> = all.iter().map(|f| f.exit_code()).collect();
        assert_eq!(codes, [2, 2, 2, 2, 1]);
    }
}
