//! Reading a Prometheus text exposition (format 0.0.4) back into samples, to assert on what a
//! scrape shows.

use std::collections::BTreeMap;

/// One sample: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The name, with its suffix (`_total`, `_bucket`, `_count`, ...).
    pub name: String,
    /// The labels.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// The samples of one scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The text as scraped.
    pub text: String,
    /// Its samples, in order.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses an exposition; panics, naming the line, on one it cannot read.
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("not a sample line: {line:?}")))
            .collect();
        Scrape { text: text.to_owned(), samples }
    }

    /// The sum of the values of the samples called `name` whose labels include `labels`
    /// (0 when there are none), e.g. every status of one method.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|sample| sample.value).sum()
    }

    /// The value of the one sample called `name` with labels including `labels`; `None` when
    /// there is none, and a panic when there are several.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert!(found.len() <= 1, "several samples of {name} {labels:?}: {found:?}");
        found.first().map(|sample| sample.value)
    }

    fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inside) = rest.strip_prefix('{') {
        let mut chars = inside.char_indices().peekable();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &inside[i + 1..];
                    break;
                }
                ',' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => value.push(match chars.next()?.1 {
                                'n' => '\n',
                                other => other,
                            }),
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
    }
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_and_values() {
        let scrape = Scrape::parse(
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{method=\"GET\",status=\"200\"} 3\n\
             x_total{method=\"GET\",status=\"404\"} 1\nx_total{method=\"POST\",path=\"a\\\"b,c\"} 2\n\
             h_bucket{le=\"+Inf\"} 4\nup 1\n",
        );
        assert_eq!(scrape.sum("x_total", &[("method", "GET")]), 4.0);
        assert_eq!(scrape.value("x_total", &[("path", "a\"b,c")]), Some(2.0));
        assert_eq!(scrape.value("h_bucket", &[("le", "+Inf")]), Some(4.0));
        assert_eq!(scrape.value("up", &[]), Some(1.0));
        assert_eq!(scrape.value("down", &[]), None);
    }

    #[test]
    #[should_panic(expected = "not a sample line")]
    fn refuses_what_it_cannot_read() {
        Scrape::parse("x_total{method=GET} 1\n");
    }
}
