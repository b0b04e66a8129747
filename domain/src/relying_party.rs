//! Relying parties: the connected systems. Stream `relying_party-<id>`.

use crate::{check_text, Context, DomainError, ErrorCode, RelyingPartyId, Role};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RpKind {
    Municipality,
    PaymentServiceProvider,
    LibrarySystem,
    PrivateBusiness,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpStatus {
    Active,
    Suspended,
    Retired,
}

/// A registered relying party as the log says it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct RelyingPartyState {
    pub id: RelyingPartyId,
    pub code: String,
    pub name: String,
    pub kind: RpKind,
    pub status: RpStatus,
    /// The current public key (JWK) for client authentication.
    pub public_jwk: Value,
    /// 1 at registration, +1 per rotation: lets a verifier tell keys apart in logs.
    pub key_version: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RelyingPartyCommand {
    Register {
        id: RelyingPartyId,
        code: String,
        name: String,
        kind: RpKind,
        public_jwk: Value,
    },
    RotateKey {
        public_jwk: Value,
    },
    Suspend {
        reason: String,
    },
    Resume,
    Retire {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum RelyingPartyEvent {
    Registered {
        id: RelyingPartyId,
        code: String,
        name: String,
        kind: RpKind,
        public_jwk: Value,
    },
    KeyRotated {
        public_jwk: Value,
    },
    Suspended {
        reason: String,
    },
    Resumed,
    Retired {
        reason: String,
    },
}

#[derive(Debug)]
pub struct RelyingParty;

/// Longest JWK accepted: an RSA-4096 public key is under 1 KiB; anything far larger is not a
/// public key.
pub const MAX_JWK_BYTES: usize = 8 * 1024;

/// Checks a municipality's 6-digit local government code (全国地方公共団体コード): the sixth
/// digit is `(11 - (Σ dᵢ·wᵢ mod 11)) mod 10` with weights 6,5,4,3,2 over the first five.
pub fn valid_local_government_code(code: &str) -> bool {
    let digits: Vec<u32> = code.chars().filter_map(|c| c.to_digit(10)).collect();
    if code.len() != 6 || digits.len() != 6 {
        return false;
    }
    let sum: u32 = digits[..5]
        .iter()
        .zip([6, 5, 4, 3, 2])
        .map(|(d, w)| d * w)
        .sum();
    (11 - sum % 11) % 10 == digits[5]
}

/// A public JWK: an object with a known `kty` and no private members (a private key sent by
/// mistake must never reach an immutable log).
pub fn check_public_jwk(jwk: &Value) -> Result<(), DomainError> {
    let bad = |why: &str| DomainError::new(ErrorCode::INVALID_JWK, why.to_owned());
    let obj = jwk
        .as_object()
        .ok_or_else(|| bad("a JWK must be a JSON object"))?;
    match obj.get("kty").and_then(Value::as_str) {
        Some("RSA" | "EC" | "OKP") => {}
        _ => return Err(bad("kty must be RSA, EC or OKP")),
    }
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| obj.contains_key(*m))
    {
        return Err(bad("the JWK contains private key material"));
    }
    if jwk.to_string().len() > MAX_JWK_BYTES {
        return Err(bad("the JWK is too large"));
    }
    Ok(())
}

fn check_code(kind: RpKind, code: &str) -> Result<(), DomainError> {
    if kind == RpKind::Municipality {
        if valid_local_government_code(code) {
            return Ok(());
        }
        return Err(DomainError::new(
            ErrorCode::INVALID_LOCAL_GOVERNMENT_CODE,
            format!("{code:?} is not a 6-digit local government code with a valid check digit"),
        ));
    }
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DomainError::new(
            ErrorCode::INVALID_INPUT,
            "code must be 1..=64 characters of [A-Za-z0-9_-]",
        ))
    }
}

/// The relying party exists and may act. Used wherever a relying party acts or is acted for.
pub fn ensure_active<'s>(
    state: &'s Option<RelyingPartyState>,
    id: &RelyingPartyId,
) -> Result<&'s RelyingPartyState, DomainError> {
    match state {
        None => Err(DomainError::new(
            ErrorCode::RP_NOT_FOUND,
            format!("relying party {id} is not registered"),
        )),
        Some(rp) => match rp.status {
            RpStatus::Active => Ok(rp),
            RpStatus::Suspended => Err(DomainError::new(
                ErrorCode::RP_SUSPENDED,
                format!("relying party {id} is suspended"),
            )),
            RpStatus::Retired => Err(DomainError::new(
                ErrorCode::RP_RETIRED,
                format!("relying party {id} is retired"),
            )),
        },
    }
}

fn existing(state: &Option<RelyingPartyState>) -> Result<&RelyingPartyState, DomainError> {
    state
        .as_ref()
        .ok_or_else(|| DomainError::new(ErrorCode::RP_NOT_FOUND, "relying party is not registered"))
}

fn not_retired(rp: &RelyingPartyState) -> Result<(), DomainError> {
    if rp.status == RpStatus::Retired {
        return Err(DomainError::new(
            ErrorCode::RP_RETIRED,
            format!("relying party {} is retired", rp.id),
        ));
    }
    Ok(())
}

pub fn decide(
    state: &Option<RelyingPartyState>,
    command: RelyingPartyCommand,
    ctx: &Context<'_>,
) -> Result<Vec<RelyingPartyEvent>, DomainError> {
    use RelyingPartyCommand as C;
    use RelyingPartyEvent as E;
    match command {
        C::Register {
            id,
            code,
            name,
            kind,
            public_jwk,
        } => {
            ctx.require_operator()?;
            if state.is_some() {
                return Err(DomainError::new(
                    ErrorCode::RP_ALREADY_REGISTERED,
                    format!("relying party {id} is already registered"),
                ));
            }
            check_text("name", &name)?;
            check_code(kind, &code)?;
            check_public_jwk(&public_jwk)?;
            Ok(vec![E::Registered {
                id,
                code,
                name,
                kind,
                public_jwk,
            }])
        }
        C::RotateKey { public_jwk } => {
            let rp = existing(state)?;
            match ctx.role() {
                Role::Operator => not_retired(rp)?,
                // A relying party may rotate its own key, but only while it may act at all.
                Role::RelyingParty(me) if *me == rp.id => {
                    ensure_active(state, &rp.id)?;
                }
                _ => {
                    return Err(DomainError::not_authorised(
                        ctx,
                        "only an operator or the relying party itself may rotate its key",
                    ))
                }
            }
            check_public_jwk(&public_jwk)?;
            Ok(vec![E::KeyRotated { public_jwk }])
        }
        C::Suspend { reason } => {
            ctx.require_operator()?;
            let rp = existing(state)?;
            ensure_active(state, &rp.id)?;
            check_text("reason", &reason)?;
            Ok(vec![E::Suspended { reason }])
        }
        C::Resume => {
            ctx.require_operator()?;
            let rp = existing(state)?;
            not_retired(rp)?;
            if rp.status != RpStatus::Suspended {
                return Err(DomainError::new(
                    ErrorCode::RP_NOT_SUSPENDED,
                    format!("relying party {} is not suspended", rp.id),
                ));
            }
            Ok(vec![E::Resumed])
        }
        C::Retire { reason } => {
            ctx.require_operator()?;
            let rp = existing(state)?;
            not_retired(rp)?;
            check_text("reason", &reason)?;
            Ok(vec![E::Retired { reason }])
        }
    }
}

pub fn evolve(
    state: Option<RelyingPartyState>,
    event: &RelyingPartyEvent,
) -> Option<RelyingPartyState> {
    use RelyingPartyEvent as E;
    match (state, event) {
        (
            _,
            E::Registered {
                id,
                code,
                name,
                kind,
                public_jwk,
            },
        ) => Some(RelyingPartyState {
            id: id.clone(),
            code: code.clone(),
            name: name.clone(),
            kind: *kind,
            status: RpStatus::Active,
            public_jwk: public_jwk.clone(),
            key_version: 1,
        }),
        (Some(mut rp), E::KeyRotated { public_jwk }) => {
            rp.public_jwk = public_jwk.clone();
            rp.key_version += 1;
            Some(rp)
        }
        (Some(mut rp), E::Suspended { .. }) => {
            rp.status = RpStatus::Suspended;
            Some(rp)
        }
        (Some(mut rp), E::Resumed) => {
            rp.status = RpStatus::Active;
            Some(rp)
        }
        (Some(mut rp), E::Retired { .. }) => {
            rp.status = RpStatus::Retired;
            Some(rp)
        }
        // An event before registration cannot have been decided; ignore rather than panic.
        (None, _) => None,
    }
}

crate::aggregate!(
    RelyingParty,
    "relying_party",
    Option<RelyingPartyState>,
    RelyingPartyCommand,
    RelyingPartyEvent
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_local_government_codes_pass_the_check_digit() {
        for ok in ["131016", "011002", "271004", "010006", "472018"] {
            assert!(valid_local_government_code(ok), "{ok}");
        }
        for bad in [
            "131017",
            "011003",
            "27100",
            "2710040",
            "13101a",
            "",
            "１３１０１６",
        ] {
            assert!(!valid_local_government_code(bad), "{bad}");
        }
    }
}
