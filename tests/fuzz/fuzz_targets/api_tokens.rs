//! The API tokens file, as the inspector parses it (at start and on every change), and the
//! tokens it holds checked against what a client could present.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_inspector::{Scope, Tokens};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tokens) = Tokens::from_json(text) else {
        return;
    };
    for presented in [None, Some(""), Some(text), text.get(..32)] {
        for scope in [Scope::Read, Scope::Emit, Scope::Admin] {
            let answer = tokens.check(presented, scope);
            if presented.is_none() && !tokens.is_empty() {
                assert!(answer.is_err(), "no token, no access");
            }
        }
    }
});
