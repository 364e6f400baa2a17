//! Account fields as submitted: each validated and normalized by a pure function that says
//! what is wrong in a sentence.

pub fn normalize_email(raw: &str) -> Result<String, String> {
    let e = raw.trim().to_lowercase();
    if e.is_empty() {
        return Err("is required".into());
    }
    if e.len() > 254 || !email_address::EmailAddress::is_valid(&e) || !e.contains('@') {
        return Err("is not an email address".into());
    }
    let domain = e.rsplit('@').next().unwrap_or("");
    if !domain.contains('.') && domain != "localhost" {
        return Err("is not an email address".into());
    }
    // One plain `@`, no quoted local part or comment (`"admin@example.com"@evil.test` reads
    // as an example.com address to an application that looks for the domain in the text),
    // and an address the mailer can send to: a code that cannot be mailed verifies nothing.
    if e.matches('@').count() != 1
        || e.contains(['"', '(', ')'])
        || e.parse::<lettre::Address>().is_err()
    {
        return Err("is not an email address".into());
    }
    Ok(e)
}

pub fn normalize_username(raw: &str) -> Result<String, String> {
    let u = raw.trim().to_lowercase();
    let ok_chars = u
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !(3..=32).contains(&u.len())
        || !ok_chars
        || !u.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
    {
        return Err(
            "must be 3 to 32 letters, digits, '_', '.' or '-', starting with a letter or digit"
                .into(),
        );
    }
    Ok(u)
}

/// E.164: '+', a non-zero country digit, up to 15 digits in all. Spaces, dashes and
/// parentheses are accepted and removed.
pub fn normalize_phone(raw: &str) -> Result<String, String> {
    let p: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    let digits = p.strip_prefix('+').unwrap_or("");
    let valid = digits.len() >= 8
        && digits.len() <= 15
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !valid {
        return Err("must be an international number such as +14155550100 (E.164)".into());
    }
    Ok(p)
}

pub fn normalize_full_name(raw: &str) -> Result<String, String> {
    let n = raw.trim().to_string();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err("must be 1 to 100 characters, without control characters".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_validation() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "alice@",
            "@x.com",
            "a b@x.com",
            "alice@nodot",
            "\"admin@example.com\"@evil.test",
            "\"a\"@example.com",
            "alice(comment)@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
        assert_eq!(
            normalize_email("first.last+tag@sub.example.com").unwrap(),
            "first.last+tag@sub.example.com"
        );
        assert_eq!(normalize_username("Alice_1").unwrap(), "alice_1");
        for bad in ["ab", "-abc", "has space", "a@b", &"x".repeat(33)] {
            assert!(normalize_username(bad).is_err(), "{bad}");
        }
        assert_eq!(
            normalize_phone("+1 (415) 555-0100").unwrap(),
            "+14155550100"
        );
        for bad in [
            "4155550100",
            "+0123456789",
            "+12",
            "+1234567890123456",
            "+1415abc0100",
        ] {
            assert!(normalize_phone(bad).is_err(), "{bad}");
        }
        assert!(normalize_full_name("Ada Lovelace").is_ok());
        assert!(normalize_full_name("bad\u{7}").is_err());
    }
}
