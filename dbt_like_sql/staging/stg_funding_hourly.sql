-- description: Every (venue, asset, hour) on one hourly grid. `hour` is the start of the hour [hour, hour+1h). Accrual convention (used everywhere): a rate with interval h settled at T accrues evenly over the h hours before T, so `rate_per_hour` is what a position earned in this hour; it becomes known at `known_at` (its settlement). `observed_*` is what a trader could see at the instant `hour`: the latest settlement at or before it. Venues settle on the hour; sub-second stamps are collection jitter and are rounded away. One symbol per (venue, asset): USDT-quoted first, then USDC, then USD.
-- unique_key: venue, asset, hour
-- not_null: venue, asset, hour, value_source, settles_in_hour
-- accepted_range: rate_per_hour -0.04 0.04
-- accepted_range: observed_rate_per_hour -0.04 0.04
-- summary: SELECT value_source, count(*) AS hours FROM stg_funding_hourly GROUP BY 1 ORDER BY 1
WITH symbol_rank AS (
    SELECT venue, asset, venue_symbol,
           row_number() OVER (
               PARTITION BY venue, asset
               ORDER BY quote_rank(quote), count(*) DESC, venue_symbol
           ) AS rk
    FROM {{ ref('funding_rates') }}
    GROUP BY venue, asset, venue_symbol, quote
),
settlements AS (
    SELECT f.venue, f.asset, f.venue_symbol,
           date_trunc('hour', f.ts + INTERVAL 30 MINUTE) AS settled_at,
           f.interval_hours, f.rate, f.rate_per_hour
    FROM {{ ref('funding_rates') }} f
    JOIN symbol_rank s ON s.venue = f.venue AND s.asset = f.asset AND s.venue_symbol = f.venue_symbol AND s.rk = 1
    QUALIFY row_number() OVER (PARTITION BY f.venue, f.asset, settled_at ORDER BY f.ts DESC) = 1
),
grid AS (
    SELECT venue, asset,
           unnest(generate_series(
               min(settled_at - to_hours(interval_hours::BIGINT)),
               max(settled_at) - INTERVAL 1 HOUR,
               INTERVAL 1 HOUR)) AS hour
    FROM settlements
    GROUP BY venue, asset
),
accrual AS (  -- the first settlement at or after the end of the hour
    SELECT g.venue, g.asset, g.hour, s.venue_symbol, s.settled_at, s.interval_hours, s.rate_per_hour
    FROM grid g
    ASOF LEFT JOIN settlements s
      ON s.venue = g.venue AND s.asset = g.asset AND s.settled_at >= g.hour + INTERVAL 1 HOUR
),
observed AS (  -- the last settlement at or before the instant `hour`
    SELECT g.venue, g.asset, g.hour, o.settled_at, o.interval_hours, o.rate_per_hour
    FROM grid g
    ASOF LEFT JOIN settlements o
      ON o.venue = g.venue AND o.asset = g.asset AND o.settled_at <= g.hour
)
SELECT
    a.venue,
    a.asset,
    a.hour,
    a.venue_symbol,
    CASE WHEN in_window THEN a.interval_hours END AS interval_hours,
    CASE WHEN in_window THEN a.rate_per_hour END AS rate_per_hour,
    CASE WHEN NOT in_window THEN 'missing'
         WHEN a.settled_at = a.hour + INTERVAL 1 HOUR THEN 'settled'
         ELSE 'carried' END AS value_source,
    coalesce(in_window AND a.settled_at = a.hour + INTERVAL 1 HOUR, false) AS settles_in_hour,
    CASE WHEN in_window THEN a.settled_at END AS known_at,
    o.rate_per_hour AS observed_rate_per_hour,
    o.interval_hours AS observed_interval_hours,
    o.settled_at AS observed_settled_at,
    epoch(a.hour - o.settled_at) / 3600 AS observed_age_hours
FROM (
    SELECT *, coalesce(settled_at - to_hours(interval_hours::BIGINT) <= hour, false) AS in_window FROM accrual
) a
JOIN observed o USING (venue, asset, hour)
