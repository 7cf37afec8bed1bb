-- description: One bar series per (venue, asset): the finest timeframe available, USDT-quoted symbol first. `hour` is the instant the bar's close is known (bar open + bar length), so nothing downstream can use a close before it exists. `log_return` is null across a gap (a missing bar), never spread over it.
-- unique_key: venue, asset, hour
-- not_null: venue, asset, hour, close
-- accepted_range: close 0 1e12
WITH tf AS (
    SELECT *, bar_minutes(timeframe) AS bar_minutes  -- an unknown timeframe is an error (sql_macros)
    FROM {{ ref('candles') }}
),
ranked AS (
    SELECT venue, asset, venue_symbol, timeframe,
           row_number() OVER (
               PARTITION BY venue, asset
               ORDER BY min(bar_minutes), quote_rank(quote), count(*) DESC, venue_symbol
           ) AS rk
    FROM tf GROUP BY venue, asset, venue_symbol, timeframe, quote
),
bars AS (
    SELECT c.venue, c.asset, c.venue_symbol, c.timeframe, c.bar_minutes,
           c.ts + to_minutes(c.bar_minutes) AS hour, c.open, c.high, c.low, c.close, c.volume,
           lag(c.close) OVER w AS prev_close,
           epoch(c.ts - lag(c.ts) OVER w) / 60 AS gap_minutes
    FROM tf c
    JOIN ranked r ON r.venue = c.venue AND r.asset = c.asset AND r.venue_symbol = c.venue_symbol
                 AND r.timeframe = c.timeframe AND r.rk = 1
    WINDOW w AS (PARTITION BY c.venue, c.asset ORDER BY c.ts)
)
SELECT venue, asset, venue_symbol, timeframe, bar_minutes, hour, open, high, low, close, volume,
       volume * close AS volume_usd,
       consecutive_log_return(close, prev_close, gap_minutes, bar_minutes) AS log_return
FROM bars
