-- description: For each asset, hour and ordered venue pair (short leg, long leg) both present at that hour: the funding spread short − long per hour and as APR (× 8760), from per-hour rates so 1h and 8h venues mix correctly. `spread_per_hour` is what a delta-neutral position earned in the hour (accrual convention of stg_funding_hourly, known at `known_at`); `observed_spread_per_hour` is the spread a trader saw at the instant `hour`. Both legs' intervals are kept. A row exists when both legs have either an accrued or a fresh observed rate (observed no older than two intervals); rows used as of `hour` must filter on the observed columns, whose presence never depends on later data.
-- unique_key: asset, short_venue, long_venue, hour
-- not_null: asset, short_venue, long_venue, hour
-- accepted_range: spread_per_hour -0.08 0.08
-- summary: SELECT asset, count(DISTINCT short_venue || '/' || long_venue) AS ordered_pairs, count(*) AS rows, round(avg(observed_spread_apr) FILTER (WHERE observed_spread_apr > 0), 4) AS mean_positive_apr FROM spread_panel GROUP BY 1 ORDER BY 1
WITH legs AS (  -- an observed rate older than two of its intervals is stale: the venue stopped reporting
    SELECT *, rate_is_fresh(observed_age_hours, observed_interval_hours) AS observed_fresh
    FROM {{ ref('stg_funding_hourly') }}
)
SELECT
    s.asset,
    s.hour,
    s.venue AS short_venue,
    l.venue AS long_venue,
    s.rate_per_hour - l.rate_per_hour AS spread_per_hour,
    (s.rate_per_hour - l.rate_per_hour) * 8760 AS spread_apr,
    CASE WHEN s.known_at IS NOT NULL AND l.known_at IS NOT NULL THEN greatest(s.known_at, l.known_at) END AS known_at,
    CASE WHEN s.observed_fresh AND l.observed_fresh
         THEN s.observed_rate_per_hour - l.observed_rate_per_hour END AS observed_spread_per_hour,
    CASE WHEN s.observed_fresh AND l.observed_fresh
         THEN (s.observed_rate_per_hour - l.observed_rate_per_hour) * 8760 END AS observed_spread_apr,
    s.interval_hours AS short_interval_hours,
    l.interval_hours AS long_interval_hours,
    s.observed_interval_hours AS short_observed_interval_hours,
    l.observed_interval_hours AS long_observed_interval_hours,
    s.rate_per_hour AS short_rate_per_hour,
    l.rate_per_hour AS long_rate_per_hour
FROM legs s
JOIN legs l ON l.asset = s.asset AND l.hour = s.hour AND l.venue <> s.venue
WHERE (s.value_source <> 'missing' OR s.observed_fresh) AND (l.value_source <> 'missing' OR l.observed_fresh)
