//! Database URLs without their passwords, for logs and error messages: a URL may carry one in
//! its user info (`postgres://user:secret@host/db`) or as a `password=` parameter.

/// `url` with every password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = redact_userinfo(url);
    let mut from = 0;
    while let Some(at) = out[from..].find("password=").map(|i| from + i) {
        let start = at + "password=".len();
        let end = out[start..]
            .find(|c: char| c == '&' || c.is_whitespace())
            .map_or(out.len(), |i| start + i);
        out.replace_range(start..end, "***");
        from = start + 3;
    }
    out
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    // The last `@` before the query: a password with a raw `/` or `@` is still caught (an `@`
    // in the database name only masks more than needed).
    let authority_end = rest.find('?').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let Some(colon) = rest[..at].find(':') else {
        return url.to_string();
    };
    format!(
        "{}{}:***{}",
        &url[..scheme_end],
        &rest[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_replaced_wherever_they_are() {
        let cases = [
            (
                "postgres://app:s3cr:et@db.example:5432/flowrun",
                "postgres://app:***@db.example:5432/flowrun",
            ),
            (
                "postgresql://app@db/flowrun?sslmode=require&password=hunter2",
                "postgresql://app@db/flowrun?sslmode=require&password=***",
            ),
            (
                "host=db user=app password=hunter2 dbname=x",
                "host=db user=app password=*** dbname=x",
            ),
            (
                "postgres://app:a/b@c@db/flowrun",
                "postgres://app:***@db/flowrun",
            ),
            (
                "postgres://postgres@127.0.0.1:5432/test",
                "postgres://postgres@127.0.0.1:5432/test",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
