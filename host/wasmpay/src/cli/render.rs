//! Replies as text for people. Replies may grow (docs/PROTOCOL.md): every
//! field is read leniently from JSON, and anything unexpected is shown as
//! JSON rather than dropped.

use std::fmt::Write as _;

use serde_json::Value;

/// Which result shape a reply carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Payment,
    Balance,
    History,
    Capture,
    Void,
    Refund,
    Payout,
    OpenAccount,
    Deposit,
    Status,
    PluginUpload,
    PluginActive,
    PluginList,
}

/// `{"amount": "4.20", "currency": "EUR"}` as `4.20 EUR`.
pub fn money(value: &Value) -> String {
    match (value["amount"].as_str(), value["currency"].as_str()) {
        (Some(amount), Some(currency)) => format!("{amount} {currency}"),
        _ => "-".to_owned(),
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// `{"version": 3, "sha256": "9f2c..."}` as `v3 (9f2c1e0b7a4d)`.
fn plugin(value: &Value) -> String {
    let sha: String = text(&value["sha256"]).chars().take(12).collect();
    format!("v{} ({sha})", value["version"])
}

/// `{"user": "alice"}`, `{"merchant": "m-shop"}`, `"platform"`.
fn party(value: &Value) -> String {
    if let Some(user) = value["user"].as_str() {
        format!("user {user}")
    } else if let Some(merchant) = value["merchant"].as_str() {
        format!("merchant {merchant}")
    } else if let Some(other) = value.as_str() {
        other.to_owned()
    } else {
        String::new()
    }
}

/// Milliseconds since the Unix epoch as `2026-01-01 12:00:00 UTC`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    // Days to civil date (proleptic Gregorian), after Howard Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

fn duration_s(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3_600, s % 3_600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// Columns two spaces apart; the columns named in `right` (amounts) are
/// right-aligned.
pub(crate) fn table(header: &[&str], right: &[usize], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut row = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                row.push_str("  ");
            }
            if right.contains(&i) {
                row.push_str(&" ".repeat(pad));
                row.push_str(cell);
            } else {
                row.push_str(cell);
                row.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(row.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A successful reply's `result`, as text.
pub fn success(kind: Kind, reply: &Value) -> String {
    let r = &reply["result"];
    let mut out = String::new();
    match kind {
        Kind::Payment => payment(&mut out, r),
        Kind::Balance => {
            let rows: Vec<Vec<String>> = r["accounts"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    vec![
                        text(&a["account"]).to_owned(),
                        money(&a["balance"]),
                        money(&a["held"]),
                        money(&a["available"]),
                        if a["overdraft_limit"].is_null() {
                            String::new()
                        } else {
                            money(&a["overdraft_limit"])
                        },
                    ]
                })
                .collect();
            if rows.is_empty() {
                out.push_str("no accounts (the operator opens them: wasmpay open-account)\n");
            } else {
                out.push_str(&table(
                    &["account", "balance", "held", "available", "overdraft"],
                    &[1, 2, 3, 4],
                    &rows,
                ));
            }
        }
        Kind::History => {
            let rows: Vec<Vec<String>> = r["entries"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    vec![
                        e["at_ms"].as_i64().map(utc).unwrap_or_default(),
                        text(&e["kind"]).to_owned(),
                        text(&e["account"]).to_owned(),
                        money(&e["amount"]),
                        party(&e["counterparty"]),
                        text(&e["payment_id"]).to_owned(),
                        text(&e["memo"]).to_owned(),
                    ]
                })
                .collect();
            if rows.is_empty() {
                out.push_str("no entries\n");
            } else {
                out.push_str(&table(
                    &[
                        "when", "kind", "account", "amount", "with", "payment", "memo",
                    ],
                    &[3],
                    &rows,
                ));
            }
            if let Some(next) = r["next"].as_str() {
                let _ = writeln!(out, "older entries: --after {next}");
            }
        }
        Kind::Capture => {
            let _ = writeln!(
                out,
                "captured {} of {}; released {} to the payer",
                money(&r["captured"]),
                text(&r["payment_id"]),
                money(&r["released"])
            );
            settlement(&mut out, &r["settlement"]);
        }
        Kind::Void => {
            let _ = writeln!(
                out,
                "voided {}; released {} to the payer",
                text(&r["payment_id"]),
                money(&r["released"])
            );
        }
        Kind::Refund => {
            let _ = writeln!(
                out,
                "refunded {} of {}: payer credited {}",
                money(&r["amount"]),
                text(&r["payment_id"]),
                money(&r["payer_credited"])
            );
            if !r["fee"].is_null() {
                let _ = writeln!(out, "  refund fee withheld  {}", money(&r["fee"]));
            }
            let _ = writeln!(
                out,
                "  refunded so far  {}, still refundable  {}",
                money(&r["refunded_total"]),
                money(&r["refundable"])
            );
            if !r["plugin"].is_null() {
                let _ = writeln!(out, "  rules  plugin {}", plugin(&r["plugin"]));
            }
        }
        Kind::Payout => {
            let _ = writeln!(
                out,
                "paid out {} from {}; balance now {}",
                money(&r["amount"]),
                text(&r["account"]),
                money(&r["balance"])
            );
        }
        Kind::OpenAccount => {
            let _ = writeln!(
                out,
                "opened a {} account for {}; balance {}, overdraft limit {}",
                text(&r["currency"]),
                party(&r["owner"]),
                money(&r["balance"]),
                money(&r["overdraft_limit"])
            );
        }
        Kind::Deposit => {
            let _ = writeln!(
                out,
                "deposited {} for user {}; balance now {}",
                money(&r["amount"]),
                text(&r["user"]),
                money(&r["balance"])
            );
        }
        Kind::Status => {
            let _ = writeln!(
                out,
                "wasmpay {} (protocol {}), up {}",
                text(&r["version"]),
                text(&r["protocol"]),
                duration_s(r["uptime_s"].as_u64().unwrap_or(0))
            );
        }
        Kind::PluginUpload => {
            let state = if r["active"] == true {
                "active now"
            } else {
                "not active: `wasmpay plugin activate` makes it decide"
            };
            let _ = writeln!(
                out,
                "stored plugin {}, {} bytes; {state}",
                plugin(&r["plugin"]),
                r["bytes"]
            );
        }
        Kind::PluginActive => {
            let _ = writeln!(out, "active: plugin {}", plugin(&r["active"]));
            if !r["previous"].is_null() {
                let _ = writeln!(out, "before: plugin {}", plugin(&r["previous"]));
            }
        }
        Kind::PluginList => {
            let rows: Vec<Vec<String>> = r["versions"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|v| {
                    vec![
                        if v["active"] == true { "*" } else { "" }.to_owned(),
                        format!("v{}", v["version"]),
                        text(&v["sha256"]).chars().take(12).collect(),
                        v["bytes"].to_string(),
                        v["uploaded_at_ms"].as_i64().map(utc).unwrap_or_default(),
                    ]
                })
                .collect();
            if rows.is_empty() {
                out.push_str(
                    "no plugin uploaded: payments use the default rules (approve, no fees)\n",
                );
            } else {
                out.push_str(&table(
                    &["active", "version", "sha256", "bytes", "uploaded"],
                    &[3],
                    &rows,
                ));
            }
        }
    }
    out
}

fn payment(out: &mut String, r: &Value) {
    let status = text(&r["status"]);
    let _ = writeln!(
        out,
        "{status}: {} to {}, payment {}",
        money(&r["amount"]),
        text(&r["merchant"]),
        text(&r["payment_id"])
    );
    for line in r["lines"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let _ = writeln!(
            out,
            "  {:<9} {:<16} {:>14}  {}",
            text(&line["kind"]),
            text(&line["code"]),
            money(&line["amount"]),
            text(&line["description"])
        );
    }
    if !r["payer_total"].is_null() {
        let verb = if status == "held" { "held" } else { "charged" };
        let _ = writeln!(out, "  {verb:<26} {:>14}", money(&r["payer_total"]));
    }
    if let Some(expires) = r["expires_at_ms"].as_i64() {
        let _ = writeln!(
            out,
            "  hold expires {}: capture or void it before",
            utc(expires)
        );
    }
    let rules = if r["plugin"].is_null() {
        "default rules (the merchant has no plugin)".to_owned()
    } else {
        format!("plugin {}", plugin(&r["plugin"]))
    };
    let _ = writeln!(out, "  decided by {rules}");
}

fn settlement(out: &mut String, s: &Value) {
    if s.is_null() {
        return;
    }
    let credits: Vec<String> = s["merchant_credits"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(account, amount)| format!("{account} {}", money(amount)))
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  merchant credited {}; platform fee {}",
        credits.join(", "),
        money(&s["platform_fee"])
    );
}

/// What a refusal means for the next step, by code.
fn advice(code: &str) -> Option<&'static str> {
    Some(match code {
        "conflict" => {
            "This id was used before with different parameters. For a new request, use a new id (omit --id and one is generated)."
        }
        "internal_error" | "unavailable" => "Nothing was applied. Retry with the same --id.",
        "account_not_found" => {
            "The operator opens accounts: wasmpay open-account --user <user> <CURRENCY> (or --merchant <merchant>)."
        }
        "insufficient_funds" => "Deposit first: wasmpay deposit --user <user> <AMOUNT> <CURRENCY>.",
        "payment_not_captured" => "This hold was never captured: void it instead (wasmpay void).",
        "forbidden" => "This principal may not do that; check --user / --merchant.",
        _ => return None,
    })
}

/// An error reply as text: the code first (for people and for grep), the
/// message, what the merchant's rules said, and what to do next.
pub fn refusal(reply: &Value, id: &str) -> String {
    let error = &reply["error"];
    let code = text(&error["code"]);
    let mut out = String::new();
    let detail = &error["detail"];
    let decline = &detail["decline"];
    if decline.is_null() {
        let _ = writeln!(out, "refused: {code}");
    } else {
        let _ = writeln!(
            out,
            "declined: {code} ({}): {}",
            text(&decline["code"]),
            text(&decline["message"])
        );
    }
    let _ = writeln!(out, "  {}", text(&error["message"]));
    if !detail["plugin"].is_null() {
        let _ = writeln!(out, "  decided by plugin {}", plugin(&detail["plugin"]));
    }
    if let Some(advice) = advice(code) {
        let _ = writeln!(out, "  {advice}");
    }
    let _ = writeln!(out, "request id {id}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn utc_dates_match_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_767_225_600_000), "2026-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_767_225_599_000), "2025-12-31 23:59:59 UTC");
    }

    #[test]
    fn a_declined_payment_names_both_codes_and_the_plugin() {
        let reply = json!({"id": "r-1", "ok": false, "error": {"code": "payment_declined",
            "message": "payment declined: too big (amount_above_max)",
            "detail": {"decline": {"code": "amount_above_max", "message": "too big"},
                       "plugin": {"version": 2, "sha256": "abcdef0123456789"}}}});
        let text = refusal(&reply, "r-1");
        assert!(
            text.starts_with("declined: payment_declined (amount_above_max): too big\n"),
            "{text}"
        );
        assert!(text.contains("plugin v2 (abcdef012345)"), "{text}");
        assert!(text.ends_with("request id r-1\n"), "{text}");
    }

    #[test]
    fn a_balance_is_a_table_with_amounts_aligned_right() {
        let reply = json!({"ok": true, "result": {"accounts": [
            {"account": "main", "balance": {"amount": "95.50", "currency": "EUR"},
             "held": {"amount": "4.50", "currency": "EUR"}, "available": {"amount": "91.00", "currency": "EUR"}}]}});
        let text = success(Kind::Balance, &reply);
        assert_eq!(
            text,
            "account    balance      held  available  overdraft\nmain     95.50 EUR  4.50 EUR  91.00 EUR\n"
        );
    }
}
