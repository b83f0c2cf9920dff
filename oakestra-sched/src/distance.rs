//! Distances: great-circle kilometres and network milliseconds.

use crate::model::{Candidate, Endpoint, GeoPoint, Vivaldi};

/// Mean earth radius (IUGG), km.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance in km (haversine formula).
pub fn haversine_km(a: GeoPoint, b: GeoPoint) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlong = (b.long - a.long).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlong / 2.0).sin().powi(2);
    // min() guards asin against rounding just above 1 for antipodal points.
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

impl Vivaldi {
    /// Predicted RTT in ms, or `None` if the coordinates have different dimensions.
    pub fn rtt_ms(&self, other: &Vivaldi) -> Option<f64> {
        if self.vector.len() != other.vector.len() {
            return None;
        }
        let squared: f64 = self
            .vector
            .iter()
            .zip(&other.vector)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        Some(squared.sqrt() + self.height + other.height)
    }
}

/// RTT from a candidate to a user endpoint: the measured value if the candidate has one for
/// `endpoint.name`, else the Vivaldi estimate, else unknown.
pub fn user_latency_ms(candidate: &Candidate, endpoint: &Endpoint) -> Option<f64> {
    if !endpoint.name.is_empty()
        && let Some(&ms) = candidate.rtt_ms.get(&endpoint.name)
    {
        return Some(ms);
    }
    match (&candidate.vivaldi, &endpoint.vivaldi) {
        (Some(a), Some(b)) => a.rtt_ms(b),
        _ => None,
    }
}

/// RTT from a candidate to a placed instance: 0 on the same node, else as [`user_latency_ms`].
pub fn instance_latency_ms(candidate: &Candidate, instance: &Endpoint) -> Option<f64> {
    if !instance.name.is_empty() && instance.name == candidate.name {
        return Some(0.0);
    }
    user_latency_ms(candidate, instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_munich_berlin_is_about_504_km() {
        let munich = GeoPoint {
            lat: 48.1372,
            long: 11.5756,
        };
        let berlin = GeoPoint {
            lat: 52.5200,
            long: 13.4050,
        };
        let d = haversine_km(munich, berlin);
        assert!((d - 504.0).abs() < 3.0, "{d}");
        assert_eq!(haversine_km(munich, munich), 0.0);
    }

    #[test]
    fn haversine_antipodes_is_half_the_circumference() {
        let a = GeoPoint {
            lat: 0.0,
            long: 0.0,
        };
        let b = GeoPoint {
            lat: 0.0,
            long: 180.0,
        };
        let d = haversine_km(a, b);
        assert!((d - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
    }

    #[test]
    fn vivaldi_adds_heights_and_rejects_mismatched_dimensions() {
        let a = Vivaldi {
            vector: vec![0.0, 0.0],
            height: 1.0,
        };
        let b = Vivaldi {
            vector: vec![3.0, 4.0],
            height: 2.0,
        };
        assert_eq!(a.rtt_ms(&b), Some(8.0));
        let c = Vivaldi {
            vector: vec![1.0],
            height: 0.0,
        };
        assert_eq!(a.rtt_ms(&c), None);
    }

    #[test]
    fn measured_rtt_wins_over_vivaldi() {
        let mut cand = Candidate {
            name: "w1".into(),
            vivaldi: Some(Vivaldi {
                vector: vec![0.0],
                height: 0.0,
            }),
            ..Default::default()
        };
        let user = Endpoint {
            name: "munich".into(),
            location: None,
            vivaldi: Some(Vivaldi {
                vector: vec![10.0],
                height: 0.0,
            }),
        };
        assert_eq!(user_latency_ms(&cand, &user), Some(10.0));
        cand.rtt_ms.insert("munich".into(), 4.0);
        assert_eq!(user_latency_ms(&cand, &user), Some(4.0));
        let same = Endpoint {
            name: "w1".into(),
            ..Default::default()
        };
        assert_eq!(instance_latency_ms(&cand, &same), Some(0.0));
        assert_eq!(user_latency_ms(&cand, &same), None);
    }
}
