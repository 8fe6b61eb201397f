//! JSON Web Tokens: HS256 with a server secret, with `exp`, `iat`, `iss`, `aud` and the
//! algorithm pinned on every check, and the session stamp that ends a user's tokens when
//! their password or role changes.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use super::AuthError;
use crate::model::{Role, Timestamp, User};

/// What a user's tokens must match to be accepted: a digest of the user's name, role and
/// password hash. Setting a password (a fresh salt every time), changing the role, or
/// deleting the user and creating one of the same name all change it, so every token issued
/// before stops working, with nothing more to store or to clean up. It says nothing of the
/// password: the hash it digests has a random salt the token holder never sees.
pub fn session_stamp(user: &User) -> String {
    let mut digest = Sha256::new();
    for part in [
        "edgeplane-session-v1",
        user.username.as_str(),
        user.role.as_str(),
        user.password_hash.as_str(),
    ] {
        digest.update(part.as_bytes());
        digest.update([0u8]);
    }
    hex::encode(&digest.finalize()[..16])
}

/// The claims of every edgeplane token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// For `Edge` tokens: the one location they speak for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loc: Option<String>,
    /// For user tokens: the user's [`session_stamp`] when it was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stm: Option<String>,
}

/// Issues and checks tokens. Cheap to clone behind an `Arc`.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl TokenIssuer {
    /// `secret` must be at least 32 bytes.
    pub fn new(secret: &[u8], issuer: &str, audience: &str) -> Result<Self, AuthError> {
        if secret.len() < 32 {
            return Err(AuthError::Unavailable(
                "the JWT secret must be at least 32 bytes".into(),
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = 5;
        validation.validate_exp = true;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.into(),
            audience: audience.into(),
        })
    }

    /// Mints a token for `subject`, valid for `ttl_seconds` from `now`.
    pub fn issue(
        &self,
        subject: &str,
        role: Role,
        location: Option<&str>,
        now: Timestamp,
        ttl_seconds: i64,
    ) -> Result<(String, Claims), AuthError> {
        let iat = now.millis() / 1000;
        let claims = Claims {
            sub: subject.into(),
            role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat,
            exp: iat + ttl_seconds,
            jti: uuid::Uuid::new_v4().to_string(),
            loc: location.map(str::to_string),
            stm: None,
        };
        self.sign(claims)
    }

    /// Mints a session token for `user`, stamped so that it ends when the user's password or
    /// role changes.
    pub fn issue_session(
        &self,
        user: &User,
        now: Timestamp,
        ttl_seconds: i64,
    ) -> Result<(String, Claims), AuthError> {
        let (_, mut claims) = self.issue(&user.username, user.role, None, now, ttl_seconds)?;
        claims.stm = Some(session_stamp(user));
        self.sign(claims)
    }

    fn sign(&self, claims: Claims) -> Result<(String, Claims), AuthError> {
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Unavailable(format!("cannot sign token: {e}")))?;
        Ok((token, claims))
    }

    /// Verifies signature, algorithm, issuer, audience and expiry. The caller learns only
    /// "invalid token" or "token expired"; what exactly was wrong goes to the debug log.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                kind => {
                    tracing::debug!(reason = ?kind, "token refused");
                    AuthError::Invalid("invalid token".into())
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(&[7u8; 32], "edgeplane", "edgeplane-api").unwrap()
    }

    #[test]
    fn round_trip_and_every_kind_of_bad_token() {
        let now = Timestamp::now();
        let (token, claims) = issuer()
            .issue("alice", Role::Operator, None, now, 3600)
            .unwrap();
        assert_eq!(issuer().verify(&token).unwrap(), claims);

        let (expired, _) = issuer()
            .issue(
                "alice",
                Role::Operator,
                None,
                now.plus_millis(-7_200_000),
                3600,
            )
            .unwrap();
        assert_eq!(issuer().verify(&expired), Err(AuthError::Expired));

        let other_audience = TokenIssuer::new(&[7u8; 32], "edgeplane", "elsewhere").unwrap();
        let (foreign, _) = other_audience
            .issue("alice", Role::Admin, None, now, 3600)
            .unwrap();
        assert!(matches!(
            issuer().verify(&foreign),
            Err(AuthError::Invalid(_))
        ));

        let other_secret = TokenIssuer::new(&[8u8; 32], "edgeplane", "edgeplane-api").unwrap();
        let (forged, _) = other_secret
            .issue("alice", Role::Admin, None, now, 3600)
            .unwrap();
        assert!(matches!(
            issuer().verify(&forged),
            Err(AuthError::Invalid(_))
        ));

        // alg: none with the same claims and an empty signature.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = token.split('.').nth(1).unwrap();
        let unsigned = format!("{header}.{payload}.");
        assert!(matches!(
            issuer().verify(&unsigned),
            Err(AuthError::Invalid(_))
        ));

        // Tampered payload: role raised to Admin, signature kept.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut body: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        body["role"] = "Admin".into();
        parts[1] = URL_SAFE_NO_PAD.encode(body.to_string());
        assert!(matches!(
            issuer().verify(&parts.join(".")),
            Err(AuthError::Invalid(_))
        ));

        assert_eq!(
            issuer().verify("garbage"),
            Err(AuthError::Invalid("invalid token".into()))
        );
        assert_eq!(
            issuer().verify("a.b.c").unwrap_err().to_string(),
            "invalid token"
        );
        assert_eq!(
            issuer().verify(&expired).unwrap_err().to_string(),
            "token expired"
        );
    }

    #[test]
    fn session_tokens_carry_the_stamp_that_a_new_password_or_role_changes() {
        let user = User {
            username: "alice".into(),
            role: Role::Operator,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
        };
        let (token, claims) = issuer()
            .issue_session(&user, Timestamp::now(), 600)
            .unwrap();
        let verified = issuer().verify(&token).unwrap();
        assert_eq!(verified, claims);
        assert_eq!(verified.stm, Some(session_stamp(&user)));
        let new_password = User {
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXI$aGFzaA".into(),
            ..user.clone()
        };
        let new_role = User {
            role: Role::Viewer,
            ..user.clone()
        };
        assert_ne!(session_stamp(&new_password), session_stamp(&user));
        assert_ne!(session_stamp(&new_role), session_stamp(&user));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenIssuer::new(&[1u8; 16], "i", "a").is_err());
    }
}
